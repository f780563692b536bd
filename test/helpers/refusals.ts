// Every refusal a daemon's handler answers is one devloc-protocol(7) lists for that message
// (MESSAGES, "Refusals", from the catalog's MessageSpec.refusals), or one the page allows for
// any request (MESSAGES: the reason a session ended, and locatord's TRY_LATER when its store
// cannot answer). The in-process fixtures of locatord and authd count their requests through
// CheckedMetrics, so every protocol test checks the refusals it provokes, on both stores: a
// handler that starts answering a new code fails the test that provokes it until the catalog
// (and so the page) lists it. The pipeline's own checks (Order of checks) are counted apart
// (refused_total) and are not looked at here.
import { Metrics } from '../../src/common/metrics.js';
import { catalog } from '../../src/wire/catalog.js';
import { scrapeMetrics } from './metrics.js';
import type { MessageSpec } from '../../src/wire/catalog.js';

const byName = new Map<string, MessageSpec>(Object.values(catalog).map((s) => [s.name, s]));

/** What any session request may be refused with (devloc-protocol(7) MESSAGES, before the first message). */
const ANY_SESSION_REQUEST = new Set(['REVOKED', 'KICKED', 'IDENTITY_CONFLICT']);
/** And any request to locatord: its store (Redis) cannot answer. */
const ANY_LOCATORD_REQUEST = new Set(['TRY_LATER']);
/** Results of requests_total that are not refusals. */
const NOT_REFUSALS = new Set(['ok', 'ADDR_CHALLENGE']);

/** Why `result` (an error name) is not a documented answer to `type`; undefined when it is one. */
export function undocumentedRefusal(type: string, result: string): string | undefined {
  if (NOT_REFUSALS.has(result)) return undefined;
  const spec = byName.get(type);
  if (!spec) return `requests_total counted ${result} for ${type}, which is not in the catalog`;
  if (spec.refusals?.some((r) => r.code === result)) return undefined;
  if (spec.auth === 'session' && ANY_SESSION_REQUEST.has(result)) return undefined;
  if (spec.service === 'locatord' && ANY_LOCATORD_REQUEST.has(result)) return undefined;
  return `${spec.service} refused ${type} with ${result}, which devloc-protocol(7) does not list for it (src/wire/catalog.ts refusals)`;
}

/** Metrics that report (`report`, e.g. t.fail) every handler refusal the protocol page does not list. */
export class CheckedMetrics extends Metrics {
  constructor(private readonly report: (why: string) => void) {
    super();
  }

  override inc(name: string, labels?: Record<string, string>, by = 1): void {
    if (name === 'requests_total' && labels) {
      const why = undocumentedRefusal(String(labels['type']), String(labels['result']));
      if (why) this.report(why);
    }
    super.inc(name, labels, by);
  }
}

/** undocumentedInMetrics over the /metrics of each spawned daemon at `where` (scrapeMetrics's addresses). */
export async function undocumentedRefusalsAt(where: readonly (number | string)[]): Promise<string[]> {
  const texts = await Promise.all(where.map((w) => scrapeMetrics(w)));
  return texts.flatMap(undocumentedInMetrics);
}

/**
 * The same check on a spawned daemon's /metrics text (its requests_total{type, result} series):
 * the reasons, one per undocumented (type, result) counted; [] when every one is listed.
 */
export function undocumentedInMetrics(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('devloc_requests_total{')) continue;
    const labels = Object.fromEntries([...line.slice(line.indexOf('{') + 1, line.indexOf('}')).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (Number(line.slice(line.lastIndexOf(' ') + 1)) === 0) continue;
    const why = undocumentedRefusal(labels['type'] ?? '', labels['result'] ?? '');
    if (why) out.push(why);
  }
  return out;
}
