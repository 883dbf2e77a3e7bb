import { main } from '@mesh/service';
import { orchestratorService } from './index.ts';

main(orchestratorService);
