import { benchAuthd } from './authd.js';
const r = await benchAuthd({ seconds: Number(process.argv[2] ?? 5), skipEnroll: true, verbose: true });
console.log(JSON.stringify(r));
process.exit(0);
