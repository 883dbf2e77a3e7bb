import { main } from '@mesh/service';
import { dlqTriageService } from './index.ts';

main(dlqTriageService);
