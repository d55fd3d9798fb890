// Talking to the embedded server as its superuser: is the server on a port ours, make the
// application database, build the URL handed to the rest of the program.

import pg from 'pg';
import { SQLSTATE } from '../errors.js';
import { SUPERUSER } from './cluster.js';
import { realpathOr } from './os-user.js';

export const LOOPBACK = '127.0.0.1';
const CONNECT_TIMEOUT_MS = 2_000;

export interface Connection {
  port: number;
  password: string;
  database: string;
}

async function withClient<T>(conn: Connection, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    host: LOOPBACK,
    port: conn.port,
    user: SUPERUSER,
    password: conn.password,
    database: conn.database,
    ssl: false, // the server has no certificate; without this PGSSLMODE in the environment would apply
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  // A server shutting down under us reports asynchronously; unhandled, that would crash the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function pgCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

async function sameDataDir(client: pg.Client, dataDir: string): Promise<boolean> {
  const reported = (await client.query<{ d: string }>("SELECT current_setting('data_directory') AS d")).rows[0]?.d;
  if (!reported) return false;
  const [a, b] = await Promise.all([realpathOr(reported), realpathOr(dataDir)]);
  return a === b;
}

export type ProbeResult = 'ours' | 'unreachable' | 'auth-failed' | 'foreign';

/** A server on the port that answers our password and reports our data dir; anything else is not ours. */
export async function probeServer(dataDir: string, port: number, password: string): Promise<ProbeResult> {
  try {
    const ours = await withClient({ port, password, database: 'postgres' }, (c) => sameDataDir(c, dataDir));
    return ours ? 'ours' : 'foreign';
  } catch (error) {
    return pgCode(error) === SQLSTATE.INVALID_PASSWORD ? 'auth-failed' : 'unreachable';
  }
}

export async function ensureDatabase(conn: Connection, log: (message: string) => void): Promise<void> {
  await withClient({ ...conn, database: 'postgres' }, async (client) => {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [conn.database]);
    if (found.rowCount) return;
    log(`creating database ${conn.database}`);
    try {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(conn.database)}`);
    } catch (error) {
      // Concurrent creators: duplicate_database, or unique_violation on pg_database's index.
      const code = pgCode(error);
      if (code !== SQLSTATE.DUPLICATE_DATABASE && code !== SQLSTATE.UNIQUE_VIOLATION) throw error;
    }
  });
}

export function buildUrl(conn: Connection): string {
  return `postgres://${SUPERUSER}:${encodeURIComponent(conn.password)}@${LOOPBACK}:${conn.port}/` + `${encodeURIComponent(conn.database)}?sslmode=disable`;
}
