#!/usr/bin/env node
// devloc-agent(8): the terminal agent daemon (definition in daemon.ts).
import { main } from '../common/daemon.js';
import { agentDaemon } from './daemon.js';

main(agentDaemon);
