/**
 * The support-desk tools with an access policy, as a team would deploy them: support staff use every
 * tool but the privileged plan change, admins use all, approvers only decide.
 */
import { defineAccessPolicy } from 'keel/workflow';

export * from '../tools.js';

export const access = defineAccessPolicy({
  roles: {
    support: ['lookup_customer', 'get_order', 'search_kb', 'create_ticket', 'apply_credit', 'issue_refund', 'send_email'],
    admin: '*',
    approver: [],
  },
});
