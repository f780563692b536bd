// One way for tests to read a daemon's /metrics. Every request opens its own connection
// (agent: false): Node 20's global agent keeps connections alive and reuses them, and a reuse
// that crosses the server closing the idle socket (its keep-alive timeout) fails the request with
// "socket hang up" (ECONNRESET). A test that scrapes every few seconds on a loaded machine hit
// exactly that race.
import http from 'node:http';

export interface HttpAnswer {
  status: number;
  type: string;
  body: string;
}

/** GET `path` from `where` (a port on 127.0.0.1, or "host:port"), on a fresh connection. */
export function httpGet(where: number | string, path = '/metrics'): Promise<HttpAnswer> {
  const [host, port] = typeof where === 'number' ? ['127.0.0.1', where] : [where.slice(0, where.lastIndexOf(':')), Number(where.slice(where.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    http.get({ host, port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    }).on('error', reject);
  });
}

/** The text of /metrics; an HTTP status other than 200 is an error. */
export async function scrapeMetrics(where: number | string): Promise<string> {
  const a = await httpGet(where);
  if (a.status !== 200) throw new Error(`${String(where)} /metrics: HTTP ${a.status}`);
  return a.body;
}

/** Sum of the samples of `devloc_<name>` whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const full = `devloc_${name}`;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(full)) continue;
    const rest = line.slice(full.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const have: Record<string, string> = {};
    if (rest[0] === '{') for (const m of rest.slice(1, rest.indexOf('}')).matchAll(/(\w+)="([^"]*)"/g)) have[m[1]!] = m[2]!;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(rest.slice(rest.lastIndexOf(' ') + 1));
  }
  return sum;
}
