// The reference server @durable-streams/server (pinned in package.json), for
// learning the suite and as the benchmark's peer. File-backed when
// DS_DATA_DIR is set, else in memory. Prints its URL on stdout once listening.
import { DurableStreamTestServer } from "@durable-streams/server"

const server = new DurableStreamTestServer({
  port: Number(process.env.DS_PORT ?? 0),
  host: "127.0.0.1",
  dataDir: process.env.DS_DATA_DIR || undefined,
})
const url = await server.start()
console.log(url)
const stop = async () => {
  await server.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
