// Preloaded (--require) into a measured child by measured-process.test.ts. It reports on the
// readiness pipe every use of process.stdin, stdout and stderr, and, with the readiness line,
// the modules loaded since this preload: what the measured RSS would include that bare Node's
// does not.
'use strict';
const fs = require('node:fs');
const { syncBuiltinESMExports } = require('node:module');
const FD = 3;
const start = process.moduleLoadList.length;
for (const name of ['stdin', 'stdout', 'stderr']) {
  const d = Object.getOwnPropertyDescriptor(process, name);
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: d.enumerable,
    get() {
      fs.writeSync(FD, `touched ${name}\n`);
      return d.get.call(process);
    },
  });
}
const writeSync = fs.writeSync;
fs.writeSync = function (fd, data, ...rest) {
  if (fd === FD && data === 'ready\n') writeSync(FD, `loaded ${JSON.stringify(process.moduleLoadList.slice(start))}\n`);
  return writeSync.call(this, fd, data, ...rest);
};
// ES modules importing { writeSync } from 'node:fs' see the wrapper too.
syncBuiltinESMExports();
