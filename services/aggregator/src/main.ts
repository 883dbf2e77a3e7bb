import { main } from '@mesh/service';
import { aggregatorService } from './index.ts';

main(aggregatorService);
