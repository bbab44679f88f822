// The last step of `npm run build`: inside the notification backend's repository, the
// server's /debug page loads the built client and service worker from its static/
// folder, at /static/notifications.js and /static/notifications-sw.js. This copies
// them there (both names are in .gitignore: the source is client/src only). Outside
// the repository (the package installed elsewhere) there is nothing to copy to.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const client = join(dirname(fileURLToPath(import.meta.url)), "..");
const statics = join(client, "..", "static");
const COPIES = [
  ["dist/index.js", "notifications.js", "src/index.ts"],
  ["dist/notifications-sw.js", "notifications-sw.js", "src/notifications-sw.ts"],
];

// The browser loads these files as they are: they must not import anything.
for (const [built] of COPIES) {
  const text = readFileSync(join(client, built), "utf8");
  if (/^\s*(import\s|import\(|export\s.*\sfrom\s)/m.test(text)) {
    console.error(`copy-static: ${built} imports another module; a page cannot load it alone`);
    process.exit(1);
  }
}

if (!existsSync(join(statics, "debug.js"))) {
  console.log("copy-static: not inside the notification backend's repository; nothing copied");
  process.exit(0);
}

for (const [built, name, source] of COPIES) {
  const header = `// Built from client/${source} by \`npm run build\` in client/: do not edit, `
    + "not committed.\n";
  writeFileSync(join(statics, name), header + readFileSync(join(client, built), "utf8"));
  console.log(`copy-static: ${built} -> ${relative(join(client, ".."), join(statics, name))}`);
}
