// Builds app.js into a wasi:http component with componentize-js's `componentize()` API:
//   node build.mjs NODE_MODULES WIT_DIR WORLD OUT.wasm
// where NODE_MODULES holds @bytecodealliance/componentize-js (scripts/test installs it in .deps/node).
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [nodeModules, witPath, worldName, out] = process.argv.slice(2);
if (!out) throw new Error('usage: node build.mjs NODE_MODULES WIT_DIR WORLD OUT.wasm');
// This file lives outside NODE_MODULES and ES modules ignore NODE_PATH: import the package's entry by path.
const pkg = join(nodeModules, '@bytecodealliance', 'componentize-js');
const { exports } = JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8'));
const { componentize } = await import(pathToFileURL(join(pkg, exports.import ?? exports)).href);
const { component } = await componentize({
  sourcePath: join(dirname(fileURLToPath(import.meta.url)), 'app.js'),
  witPath,
  worldName,
});
await writeFile(out, component);
