// The subcommands of devloc(1). Add a module here and document it in man/devloc.1.
import type { CommandModule } from 'yargs';
import { agentCommands } from './agentctl.js';
import { benchCommand } from './bench.js';
import { connectCommand } from './connect.js';
import { ctlCommand } from './ctl.js';
import { decodeCommand } from './decode.js';
import { demoCommand } from './demo.js';
import { authdCommands } from './devices.js';
import { keygenCommand } from './keygen.js';
import { matchCommand } from './match.js';
import { allowCommand, mediaCommand, presenceCommand, searchCommand, watchCommand } from './presence.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [keygenCommand, decodeCommand, ...authdCommands, ...agentCommands, connectCommand as CommandModule, ctlCommand as CommandModule, matchCommand, watchCommand as CommandModule, presenceCommand, searchCommand as CommandModule, mediaCommand, allowCommand, demoCommand, benchCommand];
