#!/usr/bin/env node
// The one entry point: everything else lives in src/cli (compiled to dist/ by `npm ci`).
import { main } from '../dist/src/cli/main.js';

await main();
