// Bundles the page script of the Chromium end-to-end test
// (tests/e2e/browser.rs) with this package, as a browser app would: one
// ES2020 file for the browser platform, so anything of Node that slipped
// into the browser entry point fails the bundle.
import { build } from "esbuild";

await build({
  entryPoints: [new URL("../test/browser/page.ts", import.meta.url).pathname],
  outfile: new URL("../build/browser-test.js", import.meta.url).pathname,
  bundle: true,
  platform: "browser",
  format: "iife",
  target: "es2020",
  logLevel: "warning",
});
console.log("bundled build/browser-test.js");
