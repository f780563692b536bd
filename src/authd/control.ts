// authd's commands on its control socket (devloc-ctl(8)): status counts and one device's record
// (`show`). authd holds no sessions (terminals have sessions with the services), so `sessions`
// and `kick` are refused with NOT_SUPPORTED naming where to ask. Served by the control socket of
// src/common/control.ts, which runDaemon starts.
import type { DaemonControl } from '../common/daemon.js';
import type { ControlArgs } from '../common/control.js';
import { ControlRefusal, textArg } from '../common/control.js';
import type { Authd } from './server.js';

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export function authdControl(a: Authd): DaemonControl {
  return {
    status: () => {
      const { devices, revoked } = a.db.countDevices();
      return {
        devices, revoked, services: a.db.listServices().map((s) => ({ id: s.serviceId, addr: s.addr ?? null })),
        keys: a.service.keys.kids, signingKid: a.service.keys.signer.kid, replayCacheEntries: a.service.gate.replayEntries,
        authOk: a.metrics.total('auth_ok_total'), authFailed: a.metrics.total('auth_failed_total'),
      };
    },
    commands: {
      show: (args: ControlArgs) => {
        const id = textArg(args, 'target');
        const d = a.db.getDevice(id);
        if (!d) throw new ControlRefusal('NOT_FOUND', `no enrolled device ${JSON.stringify(id)} (authd knows devices by device ID; locator IDs are shown by locatord)`);
        return {
          deviceId: d.deviceId, locatorId: a.service.locator.of(d.deviceId).toString('hex'), model: d.model ?? null, region: d.region ?? null,
          revoked: d.revoked, revokedAt: iso(d.revokedAt), enrolledAt: iso(d.enrolledAt), updatedAt: iso(d.updatedAt),
        };
      },
      sessions: () => {
        throw new ControlRefusal('NOT_SUPPORTED', 'authd holds no sessions: ask locatord or matchd (devloc ctl locatord sessions)');
      },
      kick: () => {
        throw new ControlRefusal('NOT_SUPPORTED', 'authd holds no sessions: kick at locatord or matchd, or revoke the device (devloc revoke)');
      },
    },
  };
}
