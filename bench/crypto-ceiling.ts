// The crypto ceiling of an authentication (issue 16 item 3): what the machine's cores could do if
// they did nothing but the public-key operations one authentication needs, measured from
// node:crypto's own rates in a tight loop. `ceilingOperations` is the one definition of that work:
// the ceiling times it here, and bench/crypto-floor.ts does it once per datagram.
import { diffieHellman, randomBytes, sign, verify } from 'node:crypto';
import os from 'node:os';
import { generatePair, privateKeyObject, publicKeyObject } from '../src/wire/keys.js';

export interface CeilingOperations {
  /** Verify a device's Ed25519 proof (a 600-byte message: the size of a sealed request's content); true when it holds. */
  verify(): boolean;
  /** X25519 as authd does it: the peer's ephemeral key imported from its raw bytes, then the shared secret. */
  x25519(): Buffer;
  /** Sign a ticket (Ed25519, 600 bytes). */
  sign(): Buffer;
}

export function ceilingOperations(): CeilingOperations {
  const a = privateKeyObject('Ed25519', generatePair('ed25519'));
  const b = generatePair('ed25519');
  const bPub = publicKeyObject('Ed25519', b.public);
  const xa = privateKeyObject('X25519', generatePair('x25519'));
  const xb = generatePair('x25519');
  const msg = randomBytes(600);
  const sig = sign(null, msg, privateKeyObject('Ed25519', b));
  return {
    verify: () => verify(null, msg, bPub, sig),
    x25519: () => diffieHellman({ privateKey: xa, publicKey: publicKeyObject('X25519', xb.public) }),
    sign: () => sign(null, msg, a),
  };
}

const round = (x: number, digits = 0): number => Number(x.toFixed(digits));

/** Authentications per second the machine's cores could do if they did nothing but the crypto. */
export function cryptoCeiling(ms = 1000): { perCorePerS: number; cores: number; perS: number; verifyUs: number; x25519Us: number; signUs: number; cryptoUs: number } {
  const ops = ceilingOperations();
  const time = (f: () => unknown): number => {
    for (let i = 0; i < 200; i++) f();
    // CPU time, not wall time: on a busy machine the wall clock counts other processes' turns.
    let n = 0;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    while (performance.now() - t0 < ms) {
      for (let i = 0; i < 100; i++) f();
      n += 100;
    }
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / n;
  };
  const verifyUs = time(ops.verify);
  const x25519Us = time(ops.x25519);
  const signUs = time(ops.sign);
  const perCorePerS = 1e6 / (verifyUs + x25519Us + signUs);
  const cores = os.availableParallelism();
  return {
    perCorePerS: round(perCorePerS), cores, perS: round(perCorePerS * cores),
    verifyUs: round(verifyUs, 1), x25519Us: round(x25519Us, 1), signUs: round(signUs, 1),
    /** One authentication's three operations, us. */
    cryptoUs: round(verifyUs + x25519Us + signUs, 1),
  };
}
