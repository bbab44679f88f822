// Validates an AsyncAPI document with @asyncapi/parser, as CI does:
//
//   node tests/support/validate_asyncapi.mjs [docs/asyncapi.json]
//
// The file is parsed with its own path as the source, so relative $refs
// (./schemas/*.json) resolve from the document's directory. Every diagnostic is
// printed, one a line: "<severity> <code> <path>: <message>". Exits 1 when any has
// severity error or the document could not be parsed, 2 when the file or the package
// is missing, 0 otherwise (warnings, information and hints do not fail).

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const file = resolve(process.argv[2] ?? resolve(root, "docs", "asyncapi.json"));

let Parser, fromFile;
try {
  // Resolved from the repository's node_modules, wherever node is started.
  const require = createRequire(resolve(root, "package.json"));
  ({ Parser, fromFile } = require("@asyncapi/parser"));
} catch (error) {
  console.error(`@asyncapi/parser is not installed (npm ci): ${error.message}`);
  process.exit(2);
}

// Spectral's DiagnosticSeverity.
const SEVERITY = ["error", "warning", "information", "hint"];

function where(diagnostic) {
  const path = (diagnostic.path ?? []).join(".") || "(root)";
  const source = diagnostic.source && resolve(diagnostic.source) !== file
    ? ` in ${diagnostic.source}` : "";
  return `${path}${source}`;
}

try {
  readFileSync(file);
} catch (error) {
  console.error(`cannot read ${file}: ${error.message}`);
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();

const counts = { error: 0, warning: 0, information: 0, hint: 0 };
for (const diagnostic of diagnostics) {
  const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
  counts[severity] = (counts[severity] ?? 0) + 1;
  console.log(`${severity} ${diagnostic.code} ${where(diagnostic)}: ${diagnostic.message}`);
}

const summary = `${file}: ${counts.error} error(s), ${counts.warning} warning(s), `
  + `${counts.information} information, ${counts.hint} hint(s)`;
if (document === undefined || counts.error > 0) {
  console.log(`INVALID ${summary}`);
  process.exit(1);
}
console.log(`VALID ${summary}; AsyncAPI ${document.version()}, `
  + `${document.channels().length} channels, ${document.operations().length} operations, `
  + `${document.messages().length} messages`);
