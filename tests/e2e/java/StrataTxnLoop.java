// Java kafka-clients consume-transform-produce (exactly-once) driver for
// tests/e2e/test_transactions_loop_java.py. Compiled with javac at test time against
// kafka-clients 3.9.1 or 4.1.1.
//
//   java StrataTxnLoop <bootstrap> <prefix> [n=3000] [deadline_ms=40000] [max_poll_records=100]
//
// 1. Creates <prefix>-in and <prefix>-out (3 partitions each) with the Admin client.
// 2. Fills <prefix>-in with n unique values "v|<p>|<i>" (record i goes to partition p = i % 3)
//    with an idempotent producer.
// 3. The loop: a KafkaConsumer of group <prefix>-group (read_committed, no auto commit,
//    earliest, subscribe()) and a KafkaProducer with transactional.id <prefix>-txn. For each
//    non-empty poll: beginTransaction(), send "copy-"+value to the same partition number of
//    <prefix>-out, sendOffsetsToTransaction(next offset per partition of the batch,
//    consumer.groupMetadata()), then commitTransaction() -- except every third batch, which is
//    flush()ed (so its copies are in the log) and abortTransaction()ed; then the consumer is
//    rewound to the group's committed offsets (consumer.committed(assignment()); seek, or
//    seekToBeginning where there is none) as a real application does. The loop stops when
//    the group's committed offsets equal the input's end offsets (checked on an empty poll),
//    or at the deadline.
// 4. Reads <prefix>-out back from the beginning with fresh read_committed and read_uncommitted
//    consumers (assign(), seekToBeginning(), until the end offsets), and asks the Admin client
//    for the group's committed offsets (listConsumerGroupOffsets) and the end offsets.
// Prints one line "RESULT {json}":
//   {"n", "input_end_offsets": {"topic-p": n}, "committed_txns", "aborted_txns",
//    "aborted_records_acked", "batches", "multi_partition_commits" (commits whose offsets named
//    more than one partition), "rewinds": [{"batch", "to": {...}}...],
//    "txn_log": ["C100/2p" (committed, 100 records of 2 partitions), "A100/3p" (aborted), ...],
//    "rewind_mismatches": [...] (at a rewind, consumer.committed() differed from the offsets of
//    the transactions committed so far: an aborted offset was applied, or a committed one lost),
//    "loop_done": bool, "group_offsets": {"topic-p": n}, "group_offsets_consumer": {...},
//    "read_committed": {"count", "values_copied", "duplicates": [...], "missing": [...],
//                       "unexpected": [...], "misplaced": [...], "end_offsets", "positions",
//                       "complete"},
//    "read_uncommitted": {...same...}, "output_end_offsets_admin": {"latest_committed", "latest"},
//    "stages": [...], "elapsed_ms": {stage: ms}}
// or, on an unexpected exception, the same with "error", "type", "stage", "error_detail" (exit 1).
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class StrataTxnLoop {
    static final int PARTS = 3;

    static String bootstrap, prefix, inTopic, outTopic, group;
    static final Map<String, Object> out = new LinkedHashMap<>();
    static final List<String> stages = new ArrayList<>();
    static final Map<String, Long> elapsed = new LinkedHashMap<>();
    static String stage = "start";
    static long stageStart = System.currentTimeMillis();

    static void stage(String s) {
        long now = System.currentTimeMillis();
        elapsed.merge(stage, now - stageStart, Long::sum); // total time per stage
        stage = s;
        stageStart = now;
        if (!stages.contains(s)) stages.add(s); // distinct stages, in first-seen order
        System.err.println("[StrataTxnLoop] stage " + s);
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

    // ------------------------------------------------------------------ helpers

    static List<TopicPartition> partitions(String topic) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTS; p++) tps.add(new TopicPartition(topic, p));
        return tps;
    }

    static Map<String, Long> named(Map<TopicPartition, Long> m) {
        Map<String, Long> r = new TreeMap<>();
        m.forEach((tp, o) -> r.put(tp.toString(), o));
        return r;
    }

    static Map<String, Long> namedOffsets(Map<TopicPartition, OffsetAndMetadata> m) {
        Map<String, Long> r = new TreeMap<>();
        m.forEach((tp, o) -> r.put(tp.toString(), o == null ? null : o.offset()));
        return r;
    }

    static Admin admin() {
        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
        return Admin.create(ac);
    }

    static void createTopics(Admin admin) throws Exception {
        admin.createTopics(List.of(new NewTopic(inTopic, PARTS, (short) 1), new NewTopic(outTopic, PARTS, (short) 1)))
             .all().get(30, TimeUnit.SECONDS);
        long deadline = System.currentTimeMillis() + 20000;
        while (true) {
            try {
                Map<String, TopicDescription> d = admin.describeTopics(List.of(inTopic, outTopic)).allTopicNames().get(15, TimeUnit.SECONDS);
                if (d.values().stream().allMatch(td -> td.partitions().size() == PARTS
                        && td.partitions().stream().allMatch(p -> p.leader() != null))) break;
            } catch (java.util.concurrent.ExecutionException e) {
                if (System.currentTimeMillis() > deadline) throw e;
            }
            if (System.currentTimeMillis() > deadline) throw new RuntimeException("topics have no leaders");
            Thread.sleep(100);
        }
    }

    static Map<TopicPartition, Long> listOffsets(Admin admin, String topic, IsolationLevel iso) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new LinkedHashMap<>();
        for (TopicPartition tp : partitions(topic)) req.put(tp, OffsetSpec.latest());
        Map<TopicPartition, Long> r = new LinkedHashMap<>();
        admin.listOffsets(req, new ListOffsetsOptions(iso)).all().get(15, TimeUnit.SECONDS)
             .forEach((tp, info) -> r.put(tp, info.offset()));
        return r;
    }

    // ------------------------------------------------------------------ stages

    static List<String> fill(int n) throws Exception {
        Properties pc = new Properties();
        pc.put("bootstrap.servers", bootstrap);
        pc.put("enable.idempotence", "true");
        pc.put("acks", "all");
        pc.put("linger.ms", 5);
        pc.put("client.id", "strata-e2e-fill");
        pc.put("batch.size", 512); // small batches, so that the loop's fetches can be small too
        pc.put("key.serializer", StringSerializer.class.getName());
        pc.put("value.serializer", StringSerializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pc)) {
            List<Future<RecordMetadata>> futs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int part = i % PARTS;
                String v = "v|" + part + "|" + i;
                values.add(v);
                futs.add(p.send(new ProducerRecord<>(inTopic, part, "k" + i, v)));
            }
            p.flush();
            for (Future<RecordMetadata> f : futs) f.get(30, TimeUnit.SECONDS);
        }
        return values;
    }

    static KafkaConsumer<String, String> loopConsumer(int maxPollRecords) {
        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("group.id", group);
        cc.put("isolation.level", "read_committed");
        cc.put("enable.auto.commit", "false");
        cc.put("auto.offset.reset", "earliest");
        cc.put("max.poll.records", maxPollRecords);
        cc.put("fetch.max.wait.ms", 100);
        // small fetches per partition: a poll's batch then spans several partitions, so
        // sendOffsetsToTransaction commits offsets of more than one partition at a time
        cc.put("max.partition.fetch.bytes", 1024);
        cc.put("client.id", "strata-e2e-loop-consumer");
        cc.put("key.deserializer", StringDeserializer.class.getName());
        cc.put("value.deserializer", StringDeserializer.class.getName());
        return new KafkaConsumer<>(cc);
    }

    static KafkaProducer<String, String> loopProducer() {
        Properties pc = new Properties();
        pc.put("bootstrap.servers", bootstrap);
        pc.put("transactional.id", prefix + "-txn");
        pc.put("transaction.timeout.ms", 30000);
        pc.put("client.id", "strata-e2e-loop-producer");
        pc.put("max.block.ms", 30000);
        pc.put("request.timeout.ms", 15000);
        pc.put("delivery.timeout.ms", 30000);
        pc.put("linger.ms", 5);
        pc.put("key.serializer", StringSerializer.class.getName());
        pc.put("value.serializer", StringSerializer.class.getName());
        return new KafkaProducer<>(pc);
    }

    static boolean caughtUp(KafkaConsumer<String, String> c, Map<TopicPartition, Long> inputEnds) {
        Map<TopicPartition, OffsetAndMetadata> committed = c.committed(inputEnds.keySet(), Duration.ofSeconds(15));
        for (Map.Entry<TopicPartition, Long> e : inputEnds.entrySet()) {
            OffsetAndMetadata om = committed.get(e.getKey());
            if (om == null || om.offset() != e.getValue()) return false;
        }
        return true;
    }

    static void loop(Map<TopicPartition, Long> inputEnds, long deadlineMs, int maxPollRecords) throws Exception {
        int committedTxns = 0, abortedTxns = 0, batch = 0, multiPartitionCommits = 0;
        long abortedAcked = 0;
        List<String> txnLog = new ArrayList<>();
        List<Object> rewinds = new ArrayList<>();
        // what the group must have committed: the offsets of every committed transaction
        Map<TopicPartition, Long> expectCommitted = new HashMap<>();
        List<String> rewindMismatches = new ArrayList<>();
        boolean done = false;
        long deadline = System.currentTimeMillis() + deadlineMs;
        stage("init_transactions");
        try (KafkaConsumer<String, String> consumer = loopConsumer(maxPollRecords);
             KafkaProducer<String, String> producer = loopProducer()) {
            producer.initTransactions();
            consumer.subscribe(List.of(inTopic));
            try {
                while (System.currentTimeMillis() < deadline) {
                    stage("poll");
                    ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                    if (records.isEmpty()) {
                        stage("check_done");
                        if (caughtUp(consumer, inputEnds)) {
                            done = true;
                            break;
                        }
                        continue;
                    }
                    batch++;
                    boolean abort = batch % 3 == 0;
                    stage("send");
                    producer.beginTransaction();
                    List<Future<RecordMetadata>> futs = new ArrayList<>();
                    for (ConsumerRecord<String, String> rec : records)
                        futs.add(producer.send(new ProducerRecord<>(outTopic, rec.partition(), rec.key(), "copy-" + rec.value())));
                    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                    for (TopicPartition tp : records.partitions()) {
                        List<ConsumerRecord<String, String>> rs = records.records(tp);
                        offsets.put(tp, new OffsetAndMetadata(rs.get(rs.size() - 1).offset() + 1));
                    }
                    stage("send_offsets");
                    producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                    if (!abort) {
                        stage("commit");
                        producer.commitTransaction();
                        for (Future<RecordMetadata> f : futs) f.get(30, TimeUnit.SECONDS);
                        committedTxns++;
                        offsets.forEach((tp, om) -> expectCommitted.put(tp, om.offset()));
                        txnLog.add("C" + records.count() + "/" + offsets.size() + "p");
                        if (offsets.size() > 1) multiPartitionCommits++;
                    } else {
                        // the copies reach the log before the abort (the test expects them there)
                        stage("flush_before_abort");
                        producer.flush();
                        for (Future<RecordMetadata> f : futs) {
                            try {
                                f.get(30, TimeUnit.SECONDS);
                                abortedAcked++;
                            } catch (java.util.concurrent.ExecutionException e) {
                                // counted as not acknowledged
                            }
                        }
                        stage("abort");
                        producer.abortTransaction();
                        abortedTxns++;
                        txnLog.add("A" + records.count() + "/" + offsets.size() + "p");
                        // rewind to what the group has committed, as a real application does
                        stage("rewind");
                        Set<TopicPartition> assignment = consumer.assignment();
                        Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assignment, Duration.ofSeconds(15));
                        Map<String, Object> rw = new LinkedHashMap<>();
                        Map<String, Long> to = new TreeMap<>();
                        List<TopicPartition> none = new ArrayList<>();
                        for (TopicPartition tp : assignment) {
                            OffsetAndMetadata om = committed.get(tp);
                            Long want = expectCommitted.get(tp);
                            Long got = om == null ? null : om.offset();
                            if (!Objects.equals(want, got))
                                rewindMismatches.add("batch " + batch + " " + tp + ": committed() " + got
                                        + ", the committed transactions' offset " + want
                                        + " (the aborted one's " + (offsets.containsKey(tp) ? offsets.get(tp).offset() : null) + ")");
                            if (om == null) {
                                none.add(tp);
                                to.put(tp.toString(), -1L);
                            } else {
                                consumer.seek(tp, om);
                                to.put(tp.toString(), om.offset());
                            }
                        }
                        if (!none.isEmpty()) consumer.seekToBeginning(none);
                        rw.put("batch", batch);
                        rw.put("to", to);
                        rewinds.add(rw);
                    }
                }
            } finally {
                out.put("committed_txns", committedTxns);
                out.put("aborted_txns", abortedTxns);
                out.put("aborted_records_acked", abortedAcked);
                out.put("batches", batch);
                out.put("multi_partition_commits", multiPartitionCommits);
                out.put("txn_log", txnLog);
                out.put("rewinds", rewinds);
                out.put("rewind_mismatches", rewindMismatches);
                out.put("loop_done", done);
            }
            stage("group_offsets_consumer");
            out.put("group_offsets_consumer",
                    namedOffsets(consumer.committed(inputEnds.keySet(), Duration.ofSeconds(15))));
            stage("close_loop_clients");
        }
    }

    static Map<String, Object> readOutput(String isolation, Set<String> inputValues, long timeoutMs) {
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
            List<TopicPartition> tps = partitions(outTopic);
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(15));
            long deadline = System.currentTimeMillis() + timeoutMs;
            boolean complete = false;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(200))) {
                    values.add(rec.value());
                    String[] f = rec.value().split("\\|");
                    if (f.length != 3 || !f[1].equals(Integer.toString(rec.partition())))
                        misplaced.add(rec.value() + " at " + rec.topic() + "-" + rec.partition() + "@" + rec.offset());
                }
                complete = true;
                for (TopicPartition tp : tps) if (c.position(tp) < ends.get(tp)) complete = false;
                if (complete) break;
            }
            // a last poll: nothing may follow the end offsets
            for (ConsumerRecord<String, String> rec : c.poll(Duration.ofMillis(300)))
                misplaced.add("after end: " + rec.value() + " at " + rec.topic() + "-" + rec.partition() + "@" + rec.offset());
            Map<String, Long> pos = new TreeMap<>();
            for (TopicPartition tp : tps) pos.put(tp.toString(), c.position(tp));

            Map<String, Integer> counts = new HashMap<>();
            for (String v : values) counts.merge(v, 1, Integer::sum);
            List<String> dups = new ArrayList<>(), missing = new ArrayList<>(), unexpected = new ArrayList<>();
            int copied = 0;
            for (Map.Entry<String, Integer> e : counts.entrySet()) {
                String v = e.getKey();
                boolean known = v.startsWith("copy-") && inputValues.contains(v.substring(5));
                if (!known) unexpected.add(v);
                else copied++;
                if (e.getValue() > 1) dups.add(v + " x" + e.getValue());
            }
            for (String v : inputValues) if (!counts.containsKey("copy-" + v)) missing.add(v);
            Collections.sort(dups);
            Collections.sort(missing);
            Collections.sort(unexpected);
            r.put("count", values.size());
            r.put("distinct", counts.size());
            r.put("values_copied", copied);
            r.put("duplicate_count", dups.size());
            r.put("duplicates", dups.subList(0, Math.min(50, dups.size())));
            r.put("missing_count", missing.size());
            r.put("missing", missing.subList(0, Math.min(50, missing.size())));
            r.put("unexpected_count", unexpected.size());
            r.put("unexpected", unexpected.subList(0, Math.min(50, unexpected.size())));
            r.put("misplaced", misplaced.subList(0, Math.min(50, misplaced.size())));
            r.put("misplaced_count", misplaced.size());
            r.put("end_offsets", named(ends));
            r.put("positions", pos);
            r.put("complete", complete);
        }
        return r;
    }

    public static void main(String[] args) {
        bootstrap = args[0];
        prefix = args[1];
        int n = args.length > 2 ? Integer.parseInt(args[2]) : 3000;
        long deadlineMs = args.length > 3 ? Long.parseLong(args[3]) : 40000;
        int maxPollRecords = args.length > 4 ? Integer.parseInt(args[4]) : 100;
        inTopic = prefix + "-in";
        outTopic = prefix + "-out";
        group = prefix + "-group";
        out.put("n", n);
        out.put("topics", List.of(inTopic, outTopic));
        out.put("group", group);
        int rc = 0;
        try (Admin admin = admin()) {
            stage("create_topics");
            createTopics(admin);
            stage("fill");
            Set<String> inputValues = new HashSet<>(fill(n));
            Map<TopicPartition, Long> inputEnds = listOffsets(admin, inTopic, IsolationLevel.READ_UNCOMMITTED);
            out.put("input_end_offsets", named(inputEnds));

            loop(inputEnds, deadlineMs, maxPollRecords);

            stage("group_offsets");
            out.put("group_offsets", namedOffsets(
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(15, TimeUnit.SECONDS)));
            stage("output_end_offsets");
            Map<String, Object> ends = new LinkedHashMap<>();
            ends.put("latest_committed", named(listOffsets(admin, outTopic, IsolationLevel.READ_COMMITTED)));
            ends.put("latest", named(listOffsets(admin, outTopic, IsolationLevel.READ_UNCOMMITTED)));
            out.put("output_end_offsets_admin", ends);
            stage("read_committed");
            out.put("read_committed", readOutput("read_committed", inputValues, 20000));
            stage("read_uncommitted");
            out.put("read_uncommitted", readOutput("read_uncommitted", inputValues, 20000));
            stage("done");
        } catch (Exception e) {
            e.printStackTrace();
            out.put("error", String.valueOf(e.getMessage()));
            out.put("type", e.getClass().getName());
            out.put("stage", stage);
            out.put("error_detail", describe(e));
            rc = 1;
        }
        stage("exit");
        out.put("stages", stages);
        out.put("elapsed_ms", elapsed);
        System.out.println("RESULT " + json(out));
        System.out.flush();
        System.exit(rc);
    }
}
