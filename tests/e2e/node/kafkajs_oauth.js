// kafkajs driver for tests/e2e/test_oauth.py (SASL/OAUTHBEARER).
//   node kafkajs_oauth.js <bootstrap> <topic> <count> <token-file> <mode>
// sasl: {mechanism: 'oauthbearer', oauthBearerProvider} reading the JWT from <token-file> at
// every call (the test writes it).
// mode "ok": admin createTopics (2 partitions) + describeCluster, a producer sends <count> keyed
// records (acks=-1) to partition i % 2, a group consumer (group strata-e2e-<topic>) reads them
// all back, admin fetchTopicOffsets.
// mode "refused": admin.connect() + describeCluster must fail (no retries).
// Prints one line "RESULT {json}" on stdout: the result (with "providerCalls"), or
// {"error": message, "name": class name, "causes": [names of the cause chain]} on failure.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, countArg, tokenFile, mode] = process.argv.slice(2);
const count = parseInt(countArg || '100', 10);
const PARTS = 2;
let providerCalls = 0;

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

const kafka = new Kafka({
  clientId: 'strata-e2e-kafkajs-oauth',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  logCreator: stderrLogger,
  connectionTimeout: 5000,
  authenticationTimeout: 5000,
  retry: mode === 'refused' ? { retries: 0 } : { retries: 3, initialRetryTime: 100 },
  sasl: {
    mechanism: 'oauthbearer',
    oauthBearerProvider: async () => {
      providerCalls += 1;
      return { value: fs.readFileSync(tokenFile, 'utf8').trim() };
    },
  },
});

async function refused() {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return { connected: true, brokers: cluster.brokers.map((b) => `${b.nodeId}@${b.host}:${b.port}`), providerCalls };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

async function ok() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 20000,
  });
  const cluster = await admin.describeCluster();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i}`, value: `kafkajs-oauth-${i}`, partition: i % PARTS });
  const sent = await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `strata-e2e-${topic}`, maxWaitTimeInMs: 200, sessionTimeout: 10000,
                                    heartbeatInterval: 1000 });
  const records = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout: consumed ${records.length}/${count}`)), 25000);
      consumer.on(consumer.events.CRASH, (e) => { clearTimeout(timer); reject(e.payload.error); });
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          records.push({ partition, offset: Number(message.offset), key: message.key.toString(),
                         value: message.value.toString() });
          if (records.length >= count) { clearTimeout(timer); resolve(); }
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return {
    created,
    brokers: cluster.brokers.map((b) => `${b.nodeId}@${b.host}:${b.port}`),
    sent: sent.map((r) => ({ partition: r.partition, errorCode: r.errorCode })),
    records,
    offsets: offsets.map((o) => ({ partition: o.partition, low: o.low, high: o.high })),
    providerCalls,
  };
}

function causes(e) {
  const out = [];
  for (let c = e; c && out.length < 6; c = c.cause === c ? null : c.cause) out.push(c.name);
  return out;
}

setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ error: 'kafkajs_oauth: hard timeout after 40s', name: 'Timeout' }) + '\n');
  process.exit(3);
}, 40000).unref();

(async () => {
  const result = await (mode === 'refused' ? refused() : ok());
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`FAILED: ${e && e.stack ? e.stack : e}\n`);
  process.stdout.write('RESULT ' + JSON.stringify({
    error: String(e && e.message ? e.message : e), name: e && e.name, type: e && e.type,
    causes: causes(e), providerCalls,
  }) + '\n');
  process.exit(1);
});
