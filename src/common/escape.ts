// One escaping function for every text a human reads (text log lines, devloc(1) text output):
// a string from the network, the agent or a file must not be able to move the terminal's
// cursor, recolour it, start a fake line or reorder what is shown. Dependency-free, so any
// component may use it.
//
// Escaped: C0 (U+0000-001F), DEL, C1 (U+0080-009F) as \xNN (\n, \r, \t by their usual names);
// the Unicode line/paragraph separators U+2028/2029 and the bidi controls U+202A-202E,
// U+2066-2069 as \u{NNNN}. Backslashes are left alone here (callers that need an unambiguous
// quoted form, like log.ts's quote(), escape them first).

const CONTROL_SOURCE = '[\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]';
const controls = new RegExp(CONTROL_SOURCE, 'g');
const controlsButNewline = new RegExp(CONTROL_SOURCE.replace('\\u0000-\\u001f', '\\u0000-\\u0009\\u000b-\\u001f'), 'g');
const anyControl = new RegExp(CONTROL_SOURCE);

function escapeOne(c: string): string {
  switch (c) {
    case '\n': return '\\n';
    case '\r': return '\\r';
    case '\t': return '\\t';
  }
  const n = c.charCodeAt(0);
  return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16).padStart(4, '0')}}`;
}

/** Does `s` hold a character escapeControls would escape? */
export function hasControls(s: string): boolean {
  return anyControl.test(s);
}

/** `s` with every control character escaped (newlines too): for one value inside a line. */
export function escapeControls(s: string): string {
  return s.replace(controls, escapeOne);
}

/**
 * A whole text output (several lines we built): every control character escaped except the
 * newline, which is ours. Values that could hold a newline of their own are escaped with
 * escapeControls where they are formatted; this is the net under every text printer.
 */
export function safeText(s: string): string {
  return s.replace(controlsButNewline, escapeOne);
}

/**
 * JSON text with DEL, C1 and the separator/bidi controls written as \uNNNN: JSON.stringify
 * escapes only C0, so these would reach a terminal raw. The value parses back unchanged.
 */
export function safeJson(json: string): string {
  return json.replace(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
