// The last step of `npm run build`: inside the notification backend's repository, the
// server's /debug page loads the built client and service worker from its static/
// folder, at /static/notifications.js and /static/notifications-sw.js. This copies
// them there. The copies are committed, so /debug works on a server that never ran
// npm; tests/unit/client/test_static_build.py checks that the committed ones are what
// a fresh build of client/src writes. Outside the repository (the package installed
// elsewhere) there is nothing to copy to.
//
//   node scripts/copy-static.mjs                  dist/ -> ../static/
//   node scripts/copy-static.mjs <dist> <static>  elsewhere (the test's fresh build)
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const client = join(dirname(fileURLToPath(import.meta.url)), "..");
const [distArg, staticArg] = process.argv.slice(2);
const dist = distArg ? resolve(distArg) : join(client, "dist");
const statics = staticArg ? resolve(staticArg) : join(client, "..", "static");
const COPIES = [
  ["index.js", "notifications.js", "src/index.ts"],
  ["notifications-sw.js", "notifications-sw.js", "src/notifications-sw.ts"],
];

// The browser loads these files as they are: they must not import anything.
for (const [built] of COPIES) {
  const text = readFileSync(join(dist, built), "utf8");
  if (/^\s*(import\s|import\(|export\s.*\sfrom\s)/m.test(text)) {
    console.error(`copy-static: dist/${built} imports another module; a page cannot load it alone`);
    process.exit(1);
  }
}

if (!staticArg && !existsSync(join(statics, "debug.js"))) {
  console.log("copy-static: not inside the notification backend's repository; nothing copied");
  process.exit(0);
}

for (const [built, name, source] of COPIES) {
  const header = `// Built from client/${source} by \`npm run build\` in client/: do not edit; `
    + "commit it with the source.\n";
  writeFileSync(join(statics, name), header + readFileSync(join(dist, built), "utf8"));
  console.log(`copy-static: dist/${built} -> ${relative(join(client, ".."), join(statics, name))}`);
}
