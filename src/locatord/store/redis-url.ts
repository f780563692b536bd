// What locatord needs of Redis before (and without) loading a client: the URL forms of
// --redis-url and the two errors every handler maps to TRY_LATER. Kept apart from
// redis-client.ts so the embedded daemon never loads ioredis (+26 MiB RSS, measured).

/** An error reply from Redis (-ERR ..., -NOSCRIPT ...). */
export class RedisReplyError extends Error {
  override readonly name = 'RedisReplyError';
}

/** Redis cannot be reached, is too slow, or our queue is full: the request may be retried. */
export class RedisUnavailable extends Error {
  override readonly name = 'RedisUnavailable';
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

export interface RedisNode {
  host: string;
  port: number;
}

export interface RedisUrl {
  nodes: RedisNode[];
  db: number;
  /** redis+cluster:// or rediss+cluster://, or several comma-separated URLs. */
  cluster: boolean;
  /** rediss:// or rediss+cluster://: TLS to every node. */
  tls: boolean;
  password?: string;
  username?: string;
}

const SCHEMES: Record<string, { cluster: boolean; tls: boolean }> = {
  'redis:': { cluster: false, tls: false },
  'rediss:': { cluster: false, tls: true },
  'redis+cluster:': { cluster: true, tls: false },
  'rediss+cluster:': { cluster: true, tls: true },
};

/**
 * Parse `redis://[user:pass@]host:port[/db]` (one standalone Redis) or
 * `redis+cluster://[user:pass@]host:port[,host:port...]` (Redis Cluster: any reachable seed
 * gives the slot map); `rediss://` and `rediss+cluster://` are the same over TLS. A
 * comma-separated list of URLs also means Cluster seeds. `user:` is an ACL user (Redis 6+).
 */
export function parseRedisUrl(url: string): RedisUrl {
  const nodes: RedisNode[] = [];
  let db = 0;
  let password: string | undefined;
  let username: string | undefined;
  let scheme = '';
  for (const part of url.split(',').map((s) => s.trim()).filter(Boolean)) {
    const withScheme = part.includes('://') ? part : `${scheme || 'redis:'}//${part}`;
    const m = /^([a-z+]+:)\/\//i.exec(withScheme);
    const proto = m?.[1]?.toLowerCase() ?? '';
    if (!SCHEMES[proto]) throw new Error(`unsupported Redis URL scheme ${proto || part} (redis://, rediss://, redis+cluster:// or rediss+cluster://)`);
    if (scheme && proto !== scheme) throw new Error(`do not mix ${scheme}// and ${proto}// in one list`);
    scheme = proto;
    const u = new URL(`redis://${withScheme.slice(proto.length + 2)}`);
    nodes.push({ host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: u.port ? Number(u.port) : 6379 });
    if (u.pathname.length > 1) db = Number(u.pathname.slice(1));
    if (!Number.isInteger(db) || db < 0) throw new Error(`bad Redis database number in ${part}`);
    if (u.password) password = decodeURIComponent(u.password);
    if (u.username) username = decodeURIComponent(u.username);
  }
  if (nodes.length === 0) throw new Error('no Redis node given');
  const { cluster: byScheme, tls } = SCHEMES[scheme]!;
  const cluster = byScheme || nodes.length > 1;
  if (cluster && db !== 0) throw new Error('Redis Cluster has only database 0');
  return { nodes, db, cluster, tls, ...(password !== undefined ? { password } : {}), ...(username ? { username } : {}) };
}
