// Key generation cannot deadlock under GC (issue 16): a `node --expose-gc` child does the key
// work of 2,000 authentications with forced collections and allocation churn, and must finish.
// A hang is caught by killing the child after a generous bound (not a timing assertion: a
// healthy run takes a few seconds). The source check keeps the old path from coming back.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { root } from '../helpers/daemon.js';

const AUTHENTICATIONS = 2000;
const HANG_BOUND_MS = 100_000;

t.test(`${AUTHENTICATIONS} authentications' key work under GC pressure finish`, async (t) => {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(root, 'test/unit/fixtures/keygen-churn.ts'), String(AUTHENTICATIONS)], {
    cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  let killed = false;
  const watchdog = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, HANG_BOUND_MS);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(watchdog);
  t.notOk(killed, 'the child finished (not killed as hung)');
  t.equal(code, 0, `child exit code; stderr: ${err}`);
  const report = JSON.parse(out.trim() || '{}') as { done?: number; agreed?: number; gcs?: number };
  t.equal(report.done, AUTHENTICATIONS, 'every authentication built and opened');
  t.equal(report.agreed, AUTHENTICATIONS, 'every session key agreement matched');
  t.ok((report.gcs ?? 0) >= AUTHENTICATIONS / 100, 'full collections forced throughout');
});

t.test('no generateKeyPairSync and no JWK export anywhere; JWK objects only in src/wire/keys.ts', async (t) => {
  const dirs = ['src', 'bench', 'fuzz', 'tools', 'test'].map((d) => path.join(root, d)).filter((d) => existsSync(d));
  const banned = [/\bgenerateKeyPair(Sync)?\s*\(/, /\.export\(\s*\{\s*format:\s*'jwk'/];
  // keys.ts imports raw keys through node's JWK object path (the fast one); nothing else should.
  const bannedOutsideKeys = /format:\s*'jwk'|kty:\s*'OKP'/;
  const keysTs = path.join(root, 'src/wire/keys.ts');
  const self = path.join(root, 'test/unit/keygen-gc.test.ts');
  const offenders: string[] = [];
  let files = 0;
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (name === 'node_modules' || name === 'dist') continue;
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.[cm]?[jt]s$/.test(name) && p !== self) {
        files++;
        const text = readFileSync(p, 'utf8');
        for (const re of banned) if (re.test(text)) offenders.push(`${path.relative(root, p)}: ${re}`);
        if (p !== keysTs && bannedOutsideKeys.test(text)) offenders.push(`${path.relative(root, p)}: ${bannedOutsideKeys}`);
      }
    }
  };
  for (const d of dirs) walk(d);
  t.ok(files > 100, `${files} files scanned`);
  t.same(offenders, [], 'keys are made and read through src/wire/keys.ts');
});
