// Node 20 fetch through HTTPS_PROXY with undici's ProxyAgent: prints the body, a
// newline, then the status. The CA is trusted the documented way, NODE_EXTRA_CA_CERTS
// (read by Node at start); certificate verification stays on.
// Usage: HTTPS_PROXY=http://127.0.0.1:8080 NODE_EXTRA_CA_CERTS=ca.pem node fetch.mjs URL
import { ProxyAgent } from "undici";

const [url] = process.argv.slice(2);
const proxy = process.env.HTTPS_PROXY;
if (!url || !proxy) {
  console.error("usage: HTTPS_PROXY=… node fetch.mjs URL");
  process.exit(2);
}
try {
  const response = await fetch(url, { dispatcher: new ProxyAgent(proxy) });
  const body = await response.text();
  process.stdout.write(`${body}\n${response.status}`);
} catch (e) {
  console.error(`fetch failed: ${e.cause?.code ?? ""} ${e.cause?.message ?? e.message}`);
  process.exit(1);
}
