// The official Durable Streams server conformance suite (pinned in
// package.json), against the server at $CONFORMANCE_TEST_URL. Its own CLI
// finds no tests when the package sits under node_modules, so a test file of
// ours calls it (see /work/shared/durable-streams/README.md).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL })
