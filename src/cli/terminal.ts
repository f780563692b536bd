#!/usr/bin/env node
// devloc(1) as the agent distribution installs it on a terminal (issue 20): only the commands
// that talk to the local devloc-agent (status, lookup, online, group, peers, connect, match,
// watch, presence, search, media, allow).
// The administration commands (keys, devices, services, decode, demo, bench) stay in the server
// package. packages/agent bundles this file as its `devloc`.
import { agentCommands } from './commands/agentctl.js';
import { connectCommand } from './commands/connect.js';
import { matchCommand } from './commands/match.js';
import { allowCommand, mediaCommand, presenceCommand, searchCommand, watchCommand } from './commands/presence.js';
import type { CommandModule } from 'yargs';
import { cliMain } from './program.js';

cliMain([...agentCommands, connectCommand as CommandModule, matchCommand, watchCommand as CommandModule, presenceCommand, searchCommand as CommandModule, mediaCommand, allowCommand], 'Talk to the local devloc-agent (the terminal-side commands of devloc(1)).');
