// Public API of the demo services: the local HTTP stand-in for the example tools' downstream systems
// (`startDemoServices`), and the typed client and wire schemas tests and benchmarks use to read its
// ledger and inject faults (`demoClient`, `LedgerSchema`, `FaultSpecSchema`). The SQLite ledger behind
// it (`ledger.ts`) is internal.
export { startDemoServices, type DemoServices, type DemoServicesOptions } from './server.js';
export type { KbArticle } from './ledger.js';
export {
  demoClient,
  DemoHttpError,
  type DemoClient,
  LedgerSchema,
  type Ledger,
  FaultSpecSchema,
  type FaultSpec,
  ActiveFaultSchema,
  type ActiveFault,
  RefundSchema,
  type Refund,
  EmailSchema,
  type Email,
  TicketSchema,
  type Ticket,
  CreditSchema,
  type Credit,
  PlanChangeSchema,
  type PlanChange,
  PlanSchema,
  type Plan,
  StatsSchema,
  type Stats,
  DemoErrorBodySchema,
  type DemoErrorBody,
} from './client.js';
