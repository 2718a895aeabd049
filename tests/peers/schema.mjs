// The bench table for Zero, readable by anyone (Zero syncs no rows of a table without read
// permissions or a query server).
import { createSchema, table, number, string, definePermissions, ANYONE_CAN } from '@rocicorp/zero';

const peer = table('peer').columns({ id: number(), title: string() }).primaryKey('id');
export const schema = createSchema({ tables: [peer], enableLegacyQueries: true });
export const permissions = definePermissions(schema, () => ({ peer: { row: { select: ANYONE_CAN } } }));
