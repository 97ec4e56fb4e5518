// kafkajs driver for tests/e2e/test_kafkajs.py.
//   node kafkajs_e2e.js produce <bootstrap> <topic> <count>   admin create + produce (none, gzip)
// Prints one JSON result line prefixed with "RESULT " on stdout; logs go to stderr.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [mode, bootstrap, topic, countArg] = process.argv.slice(2);
const count = parseInt(countArg || '1000', 10);
const PARTS = 3;

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

const kafka = new Kafka({
  clientId: 'strata-e2e-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  logCreator: stderrLogger,
  retry: { retries: 5, initialRetryTime: 100 },
});

function record(i, codec) {
  return {
    key: `k-${codec}-${i}`,
    value: `v-${codec}-${i}-` + 'z'.repeat(i % 40),
    headers: { i: String(i), codec },
    partition: i % PARTS,
  };
}

async function produce() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 30000,
  });
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const sends = [];
  for (const [name, compression] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    const results = [];
    const chunk = 500;
    for (let start = 0; start < count; start += chunk) {
      const messages = [];
      for (let i = start; i < Math.min(count, start + chunk); i++) messages.push(record(i, name));
      const r = await producer.send({ topic, acks: -1, compression, messages });
      for (const m of r) results.push({ partition: m.partition, baseOffset: m.baseOffset, errorCode: m.errorCode });
    }
    sends.push({ codec: name, results });
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return {
    created,
    partitions: md.topics[0].partitions.map((p) => ({ id: p.partitionId, leader: p.leader, err: p.partitionErrorCode })),
    sends,
    offsets,
  };
}

// hard stop: never outlive the pytest-side timeout
setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ error: `kafkajs ${mode}: hard timeout after 45s` }) + '\n');
  process.exit(3);
}, 45000).unref();

(async () => {
  const result = mode === 'produce' ? await produce() : null;
  if (result === null) throw new Error(`unknown mode ${mode}`);
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`FAILED: ${e && e.stack ? e.stack : e}\n`);
  process.stdout.write('RESULT ' + JSON.stringify({ error: String(e && e.message ? e.message : e), type: e && e.type }) + '\n');
  process.exit(1);
});
