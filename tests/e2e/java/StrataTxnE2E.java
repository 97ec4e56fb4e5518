// Java kafka-clients transactions driver for tests/e2e/test_transactions_java.py (transaction
// version 0/1 protocol: InitProducerId with a transactional id, AddPartitionsToTxn, EndTxn,
// transaction markers, read_committed fetch). Compiled with javac at test time against
// kafka-clients 3.9.1 or 4.1.1.
//
//   java StrataTxnE2E <bootstrap> <prefix> run
//   java StrataTxnE2E <bootstrap> <prefix> after-restart
//
// Topics <prefix>-a and <prefix>-b (3 partitions each); transactional ids <prefix>-main,
// <prefix>-abandon and <prefix>-crash. Every value is "<tag>|<topic>|<partition>|<i>" and is
// sent to that topic and partition; a transaction of tag T writes N records to every
// partition of the topics it names. "run":
//   c1   main producer P1: commit (both topics)
//   a2   P1: send, flush(), abortTransaction()
//   c3   P1: commit
//   z1   P1 begins a transaction, sends to topic a, flush()es: the transaction is open when
//   z2   P2 (same id) initTransactions() (must abort z1); then P1 sends z2 (both topics) and
//        commitTransaction() (must fail: ProducerFencedException, or InvalidProducerEpochException,
//        which is abortable: then abortTransaction() is tried and its exception reported too)
//   c5   P2: commit
//   z3   P3 (same id) initTransactions() while P2 has no transaction open; P2 begins, sends
//        z3 and commitTransaction()s (must fail)
//   c6   P3: commit
//   o7   abandon-id Q1: begin, send, flush(), close(Duration.ZERO) (no abort)
//   c7   Q2 (abandon id) initTransactions() (must abort o7), commit
//   then reads both topics back with read_committed and read_uncommitted consumers, and
//   p9   crash-id R1: begin, send, flush(), then the program exits without closing R1, so the
//        transaction is still open (the test then kills the broker)
// "after-restart":
//   r1   a new main-id producer: initTransactions(), commit
//   r2   a new crash-id producer: initTransactions() (must abort p9), commit
//   then reads both topics back.
// Prints one line "RESULT {json}":
//   {"mode", "sent": {tag: [values]}, "exceptions": {name: {"type","message","causes":[...]}},
//    "zombie_send_errors": ["<value> callback|send() threw|ACKED ...", ...], "stages": [...],
//    "read_committed": {"values": [...], "end_offsets": {"topic-p": n}, "positions": {...},
//                       "misplaced": [...], "complete": bool},
//    "read_uncommitted": {...}, "elapsed_ms": {stage: ms}}
// or {"error", "type", "stage", ...} (exit 1) if an unexpected exception is thrown.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class StrataTxnE2E {
    static final int PARTS = 3;
    static final int N = 4; // records per partition per transaction

    static String bootstrap, prefix, topicA, topicB;
    static final Map<String, Object> out = new LinkedHashMap<>();
    static final Map<String, List<String>> sent = new LinkedHashMap<>();
    static final Map<String, Object> exceptions = new LinkedHashMap<>();
    static final List<String> zombieSendErrors = Collections.synchronizedList(new ArrayList<>());
    static final List<String> stages = new ArrayList<>();
    static final Map<String, Long> elapsed = new LinkedHashMap<>();
    static String stage = "start";
    static long stageStart = System.currentTimeMillis();

    static void stage(String s) {
        long now = System.currentTimeMillis();
        elapsed.put(stage, now - stageStart);
        stage = s;
        stageStart = now;
        stages.add(s);
        System.err.println("[StrataTxnE2E] stage " + s);
    }

    // ------------------------------------------------------------------ json

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    static String json(Object o) {
        if (o == null) return "null";
        if (o instanceof String) return q((String) o);
        if (o instanceof Number || o instanceof Boolean) return o.toString();
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (sb.length() > 1) sb.append(',');
                sb.append(q(String.valueOf(e.getKey()))).append(':').append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof Collection) {
            StringBuilder sb = new StringBuilder("[");
            for (Object x : (Collection<?>) o) {
                if (sb.length() > 1) sb.append(',');
                sb.append(json(x));
            }
            return sb.append(']').toString();
        }
        return q(o.toString());
    }

    static Map<String, Object> describe(Throwable t) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("type", t.getClass().getName());
        m.put("message", String.valueOf(t.getMessage()));
        List<String> causes = new ArrayList<>();
        for (Throwable c = t.getCause(); c != null && causes.size() < 5; c = c.getCause())
            causes.add(c.getClass().getName() + ": " + c.getMessage());
        m.put("causes", causes);
        return m;
    }

    // ------------------------------------------------------------------ clients

    static KafkaProducer<String, String> producer(String txnId) {
        Properties pc = new Properties();
        pc.put("bootstrap.servers", bootstrap);
        pc.put("transactional.id", txnId);
        pc.put("transaction.timeout.ms", 30000);
        pc.put("client.id", "strata-e2e-" + txnId.substring(prefix.length() + 1));
        pc.put("max.block.ms", 30000);
        pc.put("request.timeout.ms", 15000);
        pc.put("delivery.timeout.ms", 30000);
        pc.put("linger.ms", 5);
        pc.put("key.serializer", StringSerializer.class.getName());
        pc.put("value.serializer", StringSerializer.class.getName());
        return new KafkaProducer<>(pc);
    }

    static List<TopicPartition> partitions(String... topics) {
        List<TopicPartition> tps = new ArrayList<>();
        for (String t : topics)
            for (int p = 0; p < PARTS; p++) tps.add(new TopicPartition(t, p));
        return tps;
    }

    /** Sends N records of `tag` to every partition of `topics`; returns their futures. */
    static List<Future<RecordMetadata>> sendTag(KafkaProducer<String, String> p, String tag, String... topics) {
        List<Future<RecordMetadata>> futs = new ArrayList<>();
        List<String> values = sent.computeIfAbsent(tag, k -> new ArrayList<>());
        for (int i = 0; i < N; i++)
            for (TopicPartition tp : partitions(topics)) {
                String v = tag + "|" + tp.topic() + "|" + tp.partition() + "|" + i;
                values.add(v);
                futs.add(p.send(new ProducerRecord<>(tp.topic(), tp.partition(), "k" + i, v)));
            }
        return futs;
    }

    static void await(List<Future<RecordMetadata>> futs) throws Exception {
        for (Future<RecordMetadata> f : futs) f.get(30, TimeUnit.SECONDS);
    }

    /** One committed transaction of `tag` on both topics. */
    static void commitTag(KafkaProducer<String, String> p, String tag) throws Exception {
        stage(tag);
        p.beginTransaction();
        List<Future<RecordMetadata>> futs = sendTag(p, tag, topicA, topicB);
        p.commitTransaction();
        await(futs);
    }

    /** Records what a fenced producer's commitTransaction() (and, if its error was the
     *  abortable InvalidProducerEpochException, abortTransaction()) threw. */
    static void zombieCommit(KafkaProducer<String, String> zombie, String name) {
        try {
            zombie.commitTransaction();
            exceptions.put(name + "_commit", null);
        } catch (Exception e) {
            exceptions.put(name + "_commit", describe(e));
            if (e instanceof org.apache.kafka.common.errors.InvalidProducerEpochException
                    || e instanceof org.apache.kafka.common.errors.TransactionAbortableException) {
                try {
                    zombie.abortTransaction();
                    exceptions.put(name + "_abort", null);
                } catch (Exception e2) {
                    exceptions.put(name + "_abort", describe(e2));
                }
            }
        }
    }

    /** A zombie's send(): a synchronous throw or a failed future is recorded (never thrown). */
    static void zombieSend(KafkaProducer<String, String> zombie, String tag, String... topics) {
        List<String> values = sent.computeIfAbsent(tag, k -> new ArrayList<>());
        for (int i = 0; i < N; i++)
            for (TopicPartition tp : partitions(topics)) {
                String v = tag + "|" + tp.topic() + "|" + tp.partition() + "|" + i;
                values.add(v);
                try {
                    zombie.send(new ProducerRecord<>(tp.topic(), tp.partition(), "k" + i, v), (md, e) -> {
                        if (e != null) zombieSendErrors.add(v + " callback " + e.getClass().getName() + ": " + e.getMessage());
                        else zombieSendErrors.add(v + " ACKED at " + md.partition() + "@" + md.offset());
                    });
                } catch (Exception e) {
                    zombieSendErrors.add(v + " send() threw " + e.getClass().getName() + ": " + e.getMessage());
                }
            }
    }

    static Map<String, Object> readAll(String isolation, long timeoutMs) {
        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("isolation.level", isolation);
        cc.put("enable.auto.commit", "false");
        cc.put("fetch.max.wait.ms", 100);
        cc.put("max.poll.records", 5000);
        cc.put("client.id", "strata-e2e-" + isolation);
        cc.put("key.deserializer", StringDeserializer.class.getName());
        cc.put("value.deserializer", StringDeserializer.class.getName());
        Map<String, Object> r = new LinkedHashMap<>();
        List<String> values = new ArrayList<>();
        List<String> misplaced = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cc)) {
            List<TopicPartition> tps = partitions(topicA, topicB);
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(15));
            long deadline = System.currentTimeMillis() + timeoutMs;
            boolean complete = false;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(200))) {
                    values.add(rec.value());
                    String[] f = rec.value().split("\\|");
                    if (f.length != 4 || !f[1].equals(rec.topic()) || !f[2].equals(Integer.toString(rec.partition())))
                        misplaced.add(rec.value() + " at " + rec.topic() + "-" + rec.partition() + "@" + rec.offset());
                }
                complete = true;
                for (TopicPartition tp : tps) if (c.position(tp) < ends.get(tp)) complete = false;
                if (complete) break;
            }
            // a last poll: nothing may follow the end offsets
            for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(300)))
                misplaced.add("after end: " + rec.value() + " at " + rec.topic() + "-" + rec.partition() + "@" + rec.offset());
            Map<String, Long> endsOut = new TreeMap<>(), pos = new TreeMap<>();
            for (TopicPartition tp : tps) {
                endsOut.put(tp.toString(), ends.get(tp));
                pos.put(tp.toString(), c.position(tp));
            }
            Map<String, Long> endsAfter = new TreeMap<>();
            c.endOffsets(tps, Duration.ofSeconds(15)).forEach((tp, o) -> endsAfter.put(tp.toString(), o));
            r.put("values", values);
            r.put("end_offsets", endsOut);
            r.put("end_offsets_after", endsAfter);
            r.put("positions", pos);
            r.put("misplaced", misplaced);
            r.put("complete", complete);
        }
        return r;
    }

    static void readBack() {
        stage("read_committed");
        out.put("read_committed", readAll("read_committed", 20000));
        stage("read_uncommitted");
        out.put("read_uncommitted", readAll("read_uncommitted", 20000));
    }

    // ------------------------------------------------------------------ scenarios

    static void run() throws Exception {
        stage("create_topics");
        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        try (Admin admin = Admin.create(ac)) {
            admin.createTopics(List.of(new NewTopic(topicA, PARTS, (short) 1), new NewTopic(topicB, PARTS, (short) 1)))
                 .all().get(30, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 20000;
            while (true) {
                try {
                    Map<String, TopicDescription> d = admin.describeTopics(List.of(topicA, topicB)).allTopicNames().get(15, TimeUnit.SECONDS);
                    if (d.values().stream().allMatch(td -> td.partitions().size() == PARTS
                            && td.partitions().stream().allMatch(p -> p.leader() != null))) break;
                } catch (java.util.concurrent.ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                }
                if (System.currentTimeMillis() > deadline) throw new RuntimeException("topics have no leaders");
                Thread.sleep(100);
            }
        }

        String mainId = prefix + "-main";
        stage("init_p1");
        KafkaProducer<String, String> p1 = producer(mainId);
        p1.initTransactions();
        commitTag(p1, "c1");

        stage("a2");
        p1.beginTransaction();
        List<Future<RecordMetadata>> a2 = sendTag(p1, "a2", topicA, topicB);
        p1.flush();
        await(a2); // in the log, uncommitted
        p1.abortTransaction();

        commitTag(p1, "c3");

        // ---- fencing a producer with a transaction open
        stage("z1");
        p1.beginTransaction();
        List<Future<RecordMetadata>> z1 = sendTag(p1, "z1", topicA);
        p1.flush();
        await(z1);
        stage("init_p2");
        KafkaProducer<String, String> p2 = producer(mainId);
        p2.initTransactions(); // bumps the epoch, aborts z1
        stage("z2");
        zombieSend(p1, "z2", topicA, topicB);
        zombieCommit(p1, "fence_open");
        p1.close(Duration.ofSeconds(5));
        commitTag(p2, "c5");

        // ---- fencing an idle producer
        stage("init_p3");
        KafkaProducer<String, String> p3 = producer(mainId);
        p3.initTransactions();
        stage("z3");
        try {
            p2.beginTransaction();
            zombieSend(p2, "z3", topicA, topicB);
            zombieCommit(p2, "fence_idle");
        } catch (Exception e) {
            exceptions.put("fence_idle_begin", describe(e));
        }
        p2.close(Duration.ofSeconds(5));
        commitTag(p3, "c6");
        stage("close_p3");
        p3.close(Duration.ofSeconds(15));

        // ---- an abandoned transaction
        String abandonId = prefix + "-abandon";
        stage("o7");
        KafkaProducer<String, String> q1 = producer(abandonId);
        q1.initTransactions();
        q1.beginTransaction();
        List<Future<RecordMetadata>> o7 = sendTag(q1, "o7", topicA, topicB);
        q1.flush();
        await(o7);
        q1.close(Duration.ZERO);
        stage("init_q2");
        KafkaProducer<String, String> q2 = producer(abandonId);
        q2.initTransactions(); // must abort o7
        commitTag(q2, "c7");
        stage("close_q2");
        q2.close(Duration.ofSeconds(15));

        readBack();

        // ---- a transaction left open when the broker is killed
        stage("p9");
        KafkaProducer<String, String> r1 = producer(prefix + "-crash");
        r1.initTransactions();
        r1.beginTransaction();
        List<Future<RecordMetadata>> p9 = sendTag(r1, "p9", topicA, topicB);
        r1.flush();
        await(p9);
        // r1 is never closed: the process exits with the transaction open
    }

    static void afterRestart() throws Exception {
        stage("init_main");
        KafkaProducer<String, String> p = producer(prefix + "-main");
        p.initTransactions();
        commitTag(p, "r1");
        stage("close_main");
        p.close(Duration.ofSeconds(15));
        stage("init_crash");
        KafkaProducer<String, String> r2 = producer(prefix + "-crash");
        r2.initTransactions(); // must abort p9 (if the coordinator has not timed it out already)
        commitTag(r2, "r2");
        stage("close_crash");
        r2.close(Duration.ofSeconds(15));
        readBack();
    }

    public static void main(String[] args) {
        bootstrap = args[0];
        prefix = args[1];
        String mode = args[2];
        topicA = prefix + "-a";
        topicB = prefix + "-b";
        out.put("mode", mode);
        out.put("topics", List.of(topicA, topicB));
        int rc = 0;
        try {
            if (mode.equals("run")) run();
            else if (mode.equals("after-restart")) afterRestart();
            else throw new IllegalArgumentException("mode " + mode);
            stage("done");
        } catch (Exception e) {
            e.printStackTrace();
            out.put("error", String.valueOf(e.getMessage()));
            out.put("type", e.getClass().getName());
            out.put("stage", stage);
            out.put("error_detail", describe(e));
            rc = 1;
        }
        out.put("sent", sent);
        out.put("exceptions", exceptions);
        synchronized (zombieSendErrors) {
            out.put("zombie_send_errors", new ArrayList<>(zombieSendErrors));
        }
        out.put("stages", stages);
        out.put("elapsed_ms", elapsed);
        System.out.println("RESULT " + json(out));
        System.out.flush();
        System.exit(rc);
    }
}
