import { benchForgedAuth, cryptoCeiling } from './authd.js';
const ceiling = cryptoCeiling();
console.log(JSON.stringify(ceiling));
console.log(JSON.stringify(await benchForgedAuth({ seconds: 5, ceiling, verbose: true })));
