#!/usr/bin/env node
import { main } from '../lib/cli/index.js'
import { benchCommand } from '../bench/cli.js'

// The bench command is the binary's, not the library's: lib/ never imports bench/.
await main(undefined, [benchCommand])
