// A webhook receiver as Node users write one (Express's or Fastify's JSON parser, then a
// Standard Webhooks check over JSON.stringify of the parsed body, as svix's verify is called):
// listens on 127.0.0.1, prints its port, then one JSON line per delivery:
// {"verified": bool, "reserialized_equal": bool, "body": parsed}. Secret: argv[2] (base64).
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const key = Buffer.from(process.argv[2].replace(/^whsec_/, ""), "base64");
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    const payload = JSON.stringify(JSON.parse(raw)); // what the handler has to verify
    const signed = `${req.headers["webhook-id"]}.${req.headers["webhook-timestamp"]}.${payload}`;
    const expected = createHmac("sha256", key).update(signed).digest();
    const verified = (req.headers["webhook-signature"] || "").split(" ").some((sig) => {
      const given = Buffer.from(sig.replace(/^v1,/, ""), "base64");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    console.log(JSON.stringify({ verified, reserialized_equal: payload === raw, body: JSON.parse(raw) }));
    res.writeHead(200).end("ok");
  });
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
