// Extracts the ```ts blocks of this package's README.md and of the
// repository's (its "Clients" section) into readme-examples/ (not
// committed), each a module of its own, so `tsc --strict` checks the code
// the READMEs show against the package. Imports of "@slop-studios/client"
// point at the sources; what an example leaves to the app (showToast,
// reloadState, …) is declared in the prelude.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const here = new URL("../", import.meta.url);
const tsBlocks = (readme) => [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
const blocks = [];
for (const readme of ["README.md", "../../README.md"]) {
  const found = tsBlocks(readFileSync(new URL(readme, here), "utf8"));
  if (found.length === 0) throw new Error(`${readme} has no \`\`\`ts block`);
  blocks.push(...found);
}
const prelude = `// Generated from a README by scripts/readme-examples.mjs.
declare function reloadState(channel: string): void;
declare function showSignIn(): void;
declare function handle(event: import("../src/index.js").Event): void;
declare const localStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };
export {};
`;
const out = new URL("readme-examples/", here);
rmSync(out, { recursive: true, force: true });
mkdirSync(out);
blocks.forEach((code, i) => {
  const source = code
    .replaceAll('from "@slop-studios/client/node"', 'from "../src/node.js"')
    .replaceAll('from "@slop-studios/client"', 'from "../src/index.js"');
  writeFileSync(new URL(`example-${i + 1}.ts`, out), prelude + source);
});
console.log(`READMEs: ${blocks.length} TypeScript examples extracted for tsc`);
