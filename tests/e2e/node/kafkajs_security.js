// kafkajs driver for tests/e2e/test_security.py (TLS, SASL/PLAIN).
//   node kafkajs_security.js <bootstrap> <topic> <count> '<json>'
// <json>: {"ssl": {"ca": path, "cert": path, "key": path}, "sasl": {"mechanism": "plain",
// "username": u, "password": p}} (either part optional; files are read here).
// Admin createTopics (2 partitions) + fetchTopicMetadata, produce <count> keyed records
// (acks=-1) to partition i % 2, fetchTopicOffsets. Prints one line "RESULT {json}" on stdout:
// the result, or {"error": message, "name": the error's class name} on failure.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, countArg, confArg] = process.argv.slice(2);
const count = parseInt(countArg || '100', 10);
const conf = JSON.parse(confArg || '{}');
const PARTS = 2;

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

const opts = {
  clientId: 'strata-e2e-kafkajs-security',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  logCreator: stderrLogger,
  connectionTimeout: 5000,
  authenticationTimeout: 5000,
  retry: { retries: 2, initialRetryTime: 100 },
};
if (conf.ssl) {
  opts.ssl = { ca: [fs.readFileSync(conf.ssl.ca, 'utf8')], rejectUnauthorized: true };
  if (conf.ssl.cert) opts.ssl.cert = fs.readFileSync(conf.ssl.cert, 'utf8');
  if (conf.ssl.key) opts.ssl.key = fs.readFileSync(conf.ssl.key, 'utf8');
}
if (conf.sasl) opts.sasl = conf.sasl;
const kafka = new Kafka(opts);

async function run() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 20000,
  });
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  const cluster = await admin.describeCluster();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i}`, value: `kafkajs-sec-${i}`, partition: i % PARTS });
  const sent = await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return {
    created,
    brokers: cluster.brokers.map((b) => `${b.nodeId}@${b.host}:${b.port}`),
    partitions: md.topics[0].partitions.map((p) => ({ id: p.partitionId, leader: p.leader })),
    sent: sent.map((r) => ({ partition: r.partition, errorCode: r.errorCode })),
    offsets: offsets.map((o) => ({ partition: o.partition, low: o.low, high: o.high })),
  };
}

// the names of e and its causes (kafkajs wraps non-retriable errors in KafkaJSNonRetriableError)
function causes(e) {
  const out = [];
  for (let c = e; c && out.length < 6; c = c.cause === c ? null : c.cause) out.push(c.name);
  return out;
}

setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ error: 'kafkajs_security: hard timeout after 40s', name: 'Timeout' }) + '\n');
  process.exit(3);
}, 40000).unref();

(async () => {
  const result = await run();
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`FAILED: ${e && e.stack ? e.stack : e}\n`);
  process.stdout.write('RESULT ' + JSON.stringify({
    error: String(e && e.message ? e.message : e), name: e && e.name, type: e && e.type,
    causes: causes(e),
  }) + '\n');
  process.exit(1);
});
