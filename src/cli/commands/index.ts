// The subcommands of devloc(1). Add a module here and document it in man/devloc.1.
import type { CommandModule } from 'yargs';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [];
