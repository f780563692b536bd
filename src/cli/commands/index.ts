// The subcommands of devloc(1). Add a module here and document it in man/devloc.1.
import type { CommandModule } from 'yargs';
import { agentCommands } from './agentctl.js';
import { decodeCommand } from './decode.js';
import { authdCommands } from './devices.js';
import { keygenCommand } from './keygen.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [keygenCommand, decodeCommand, ...authdCommands, ...agentCommands];
