// Reading the bench's SVG charts in tests without a browser or an XML library.

/** Minimal XML check: every element closed in order, one root <svg>. Returns the tag names. */
export function parseTags(svg: string): { ok: boolean; tags: string[]; error?: string } {
  const stack: string[] = [];
  const tags: string[] = [];
  const re = /<(\/?)([a-zA-Z][\w-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m; (m = re.exec(svg)); ) {
    const between = svg.slice(last, m.index);
    if (between.includes('<') || between.includes('>')) return { ok: false, tags, error: `stray markup before ${m[0]}` };
    last = re.lastIndex;
    const [, close, name, , self] = m;
    if (close) {
      if (stack.pop() !== name) return { ok: false, tags, error: `</${name}> closes nothing open` };
    } else {
      tags.push(name!);
      if (!self) stack.push(name!);
    }
  }
  if (svg.slice(last).trim() !== '') return { ok: false, tags, error: 'trailing text' };
  if (stack.length) return { ok: false, tags, error: `unclosed ${stack.join(',')}` };
  return { ok: tags[0] === 'svg', tags };
}

/** The points of each polyline, by data-series. */
export function seriesPoints(svg: string): Map<string, [number, number][]> {
  const out = new Map<string, [number, number][]>();
  for (const m of svg.matchAll(/<polyline class="series" data-series="([^"]*)"[^>]* points="([^"]*)"/g)) {
    out.set(m[1]!, m[2]!.trim() === '' ? [] : m[2]!.trim().split(/\s+/).map((p) => p.split(',').map(Number) as [number, number]));
  }
  return out;
}
