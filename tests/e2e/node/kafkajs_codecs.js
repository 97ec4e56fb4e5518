// kafkajs codec driver for tests/e2e/test_client_codecs.py.
//   node kafkajs_codecs.js codecs                                  which codecs load here
//   node kafkajs_codecs.js produce <bootstrap> <topic> <codec[,codec...]> <count>
//        admin createTopics (3 partitions) + per codec, in order, produce <count> keyed
//        records with headers (record i to partition i % 3)
//   node kafkajs_codecs.js consume <bootstrap> <topic> <count>    group consumer, all partitions
// kafkajs 2.2.4 has none + gzip built in; the other codecs are plugins registered in
// CompressionCodecs (optionalDependencies in package.json):
//   snappy: kafkajs-snappy (pure JS, snappyjs)
//   lz4:    kafkajs-lz4 1.x (the `lz4` package, a node-gyp build)
//   zstd:   @bokuweb/zstd-wasm behind a small adapter below (@kafkajs/zstd needs cppzst,
//           whose node-gyp build fails against node 20's headers: it compiles as C++11)
// Prints one JSON line prefixed with "RESULT " on stdout; logs go to stderr.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');

const PARTS = 3;
const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
};

// codec name -> null (usable) or the exact reason it is not
const unavailable = { none: null, gzip: null, snappy: null, lz4: null, zstd: null };
let zstdInit = null;

function why(pkg, e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && e.message.includes(`'${pkg}'`)) {
    return `${pkg} is not installed (an npm optionalDependency: npm ci leaves it out when it cannot ` +
      'be installed, e.g. when a node-gyp build fails; see the npm ci output of scripts/install-test-deps.sh)';
  }
  return `require('${pkg}') failed: ${String(e && e.message ? e.message : e).split('\n')[0]}`;
}

function registerPlugins() {
  try {
    CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');
  } catch (e) {
    unavailable.snappy = why('kafkajs-snappy', e);
  }
  try {
    const LZ4Codec = require('kafkajs-lz4');
    CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec;
  } catch (e) {
    unavailable.lz4 = why('kafkajs-lz4', e);
  }
  try {
    const zstd = require('@bokuweb/zstd-wasm');
    zstdInit = zstd.init();
    zstdInit.catch(() => {}); // reported by selfTest()
    CompressionCodecs[CompressionTypes.ZSTD] = () => ({
      async compress(encoder) {
        await zstdInit;
        return Buffer.from(zstd.compress(encoder.buffer, 3));
      },
      async decompress(buffer) {
        await zstdInit;
        return Buffer.from(zstd.decompress(buffer));
      },
    });
  } catch (e) {
    unavailable.zstd = why('@bokuweb/zstd-wasm', e);
  }
}

async function selfTest() {
  // round-trip a buffer through every registered plugin, so a broken one is
  // reported as unavailable instead of failing deep inside a produce
  const sample = Buffer.from('strata '.repeat(500) + 'self-test');
  for (const name of ['snappy', 'lz4', 'zstd']) {
    if (unavailable[name] !== null) continue;
    try {
      const codec = CompressionCodecs[CODECS[name]]();
      const packed = await codec.compress({ buffer: sample });
      const back = await codec.decompress(packed);
      if (!Buffer.from(back).equals(sample)) throw new Error('round trip changed the data');
    } catch (e) {
      unavailable[name] = `${name} plugin self-test failed: ${e && e.message ? e.message : e}`;
    }
  }
}

const stderrLogger = () => ({ namespace, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

function client(bootstrap) {
  return new Kafka({
    clientId: 'strata-e2e-kafkajs-codecs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    logCreator: stderrLogger,
    retry: { retries: 5, initialRetryTime: 100 },
  });
}

// must match test_client_codecs.py kafkajs_record()
function record(i, codec) {
  return {
    key: `js-${codec}-${String(i).padStart(6, '0')}`,
    value: `value-${codec}-${i}-` + 'abcdefghij'.repeat(i % 13) + `-${(i * 7919) % 100003}`,
    headers: { idx: String(i), codec, bin: Buffer.from([0, 1, 255, i % 256]), empty: '' },
    partition: i % PARTS,
  };
}

async function produce(bootstrap, topic, codecList, count) {
  const codecs = codecList.split(',');
  for (const codec of codecs) {
    if (!(codec in CODECS)) throw new Error(`unknown codec ${codec}`);
    if (unavailable[codec] !== null) throw new Error(unavailable[codec]);
  }
  const kafka = client(bootstrap);
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 30000,
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const sends = [];
  const chunk = 2000; // one send = one batch per partition
  for (const codec of codecs) {
    for (let start = 0; start < count; start += chunk) {
      const messages = [];
      for (let i = start; i < Math.min(count, start + chunk); i++) messages.push(record(i, codec));
      const r = await producer.send({ topic, acks: -1, compression: CODECS[codec], messages });
      for (const m of r) {
        sends.push({ codec, partition: m.partition, baseOffset: Number(m.baseOffset), errorCode: m.errorCode });
      }
    }
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return {
    created,
    chunk,
    sends,
    offsets: offsets.map((o) => ({ partition: o.partition, low: Number(o.low), high: Number(o.high) })),
  };
}

async function consume(bootstrap, topic, count) {
  const kafka = client(bootstrap);
  const consumer = kafka.consumer({ groupId: `strata-e2e-codecs-${topic}`, maxWaitTimeInMs: 200 });
  const got = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout: consumed ${got.length}/${count}`)), 40000);
    consumer.on(consumer.events.CRASH, (e) => { clearTimeout(timer); reject(e.payload.error); });
    consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const headers = {};
          for (const [k, v] of Object.entries(m.headers || {})) headers[k] = Buffer.from(v).toString('hex');
          got.push([batch.partition, Number(m.offset), m.key.toString(), m.value.toString(), headers, Number(m.timestamp)]);
        }
        if (got.length >= count) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  }).finally(() => consumer.disconnect());
  return { consumed: got.length, records: got };
}

// hard stop: never outlive the pytest-side timeout
setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ error: 'kafkajs_codecs: hard timeout after 80s' }) + '\n');
  process.exit(3);
}, 80000).unref();

(async () => {
  registerPlugins();
  await selfTest();
  const [mode, bootstrap, topic, a, b] = process.argv.slice(2);
  let result;
  if (mode === 'codecs') result = { unavailable };
  else if (mode === 'produce') result = await produce(bootstrap, topic, a, parseInt(b, 10));
  else if (mode === 'consume') result = await consume(bootstrap, topic, parseInt(a, 10));
  else throw new Error(`unknown mode ${mode}`);
  // stdout is a pipe (asynchronous in node): exit only once the result is written
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => process.exit(0));
})().catch((e) => {
  process.stderr.write(`FAILED: ${e && e.stack ? e.stack : e}\n`);
  process.stdout.write('RESULT ' + JSON.stringify({ error: String(e && e.message ? e.message : e), type: e && e.type }) + '\n',
    () => process.exit(1));
});
