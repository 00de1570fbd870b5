// The dashboard's page, script and styles are not TypeScript: tsc leaves them
// behind, so the build copies them beside the compiled dashboard
// (dist/lib/monitor/ui), where it reads them and where the package ships them.
import { cpSync } from 'node:fs'

cpSync(new URL('../lib/monitor/ui/', import.meta.url), new URL('../dist/lib/monitor/ui/', import.meta.url), { recursive: true })
