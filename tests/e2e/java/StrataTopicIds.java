// Java kafka-clients driver for tests/e2e/test_admin_answers.py. Compiled with javac at
// test time against tests/e2e/.deps/java/*.jar.
//
//   java StrataTopicIds <bootstrap> describe <topic-prefix>
//       Topic ids (KIP-516) through the 3.9 client: Admin.describeTopics by
//       TopicCollection.ofTopicIds (Metadata v12+ naming topics by id), existing and unknown ids.
//   java StrataTopicIds <bootstrap> ids <topic-prefix>
//       A classic assign() consumer whose fetches (Fetch v13+) name topics by id, and
//       Admin.deleteTopics by TopicCollection.ofTopicIds (DeleteTopics v6), existing and unknown ids.
//   java StrataTopicIds <bootstrap> sasl
//       An Admin configured for SASL_PLAINTEXT/PLAIN against a PLAINTEXT listener: how
//       listTopics() fails and how long that takes (default.api.timeout.ms=60000).
//
// Prints one line "CHECK {json}" per check (each with a "check" name) on stdout and a
// final "DONE". Exceptions are reported as data (class names of the cause chain), the
// test decides what is right.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class StrataTopicIds {
    static final int PARTS = 3;
    static final int RECORDS = 300;

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

    /** A JSON object built field by field. */
    static final class J {
        final StringBuilder sb = new StringBuilder("{");

        J raw(String k, String jsonValue) {
            if (sb.length() > 1) sb.append(',');
            sb.append(q(k)).append(':').append(jsonValue);
            return this;
        }

        J str(String k, String v) { return raw(k, q(v)); }

        J num(String k, long v) { return raw(k, Long.toString(v)); }

        J bool(String k, boolean v) { return raw(k, Boolean.toString(v)); }

        J strs(String k, Collection<String> vs) {
            StringBuilder a = new StringBuilder("[");
            for (String v : vs) {
                if (a.length() > 1) a.append(',');
                a.append(q(v));
            }
            return raw(k, a.append(']').toString());
        }

        @Override
        public String toString() { return sb + "}"; }
    }

    static void emit(String check, J j) {
        System.out.println("CHECK " + new J().str("check", check).raw("result", j.toString()));
        System.out.flush();
    }

    /** Class names of a throwable's cause chain, outermost first, and the innermost message. */
    static J failure(Throwable t) {
        List<String> chain = new ArrayList<>();
        String message = null;
        for (Throwable c = t; c != null && chain.size() < 8; c = c.getCause()) {
            chain.add(c.getClass().getName());
            message = c.getMessage();
        }
        return new J().bool("ok", false).strs("exceptions", chain).str("message", message);
    }

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static String value(int p, long off) { return "v-" + p + "-" + off; }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], mode = args[1];
        if (mode.equals("describe")) describe(bootstrap, args[2]);
        else if (mode.equals("ids")) ids(bootstrap, args[2]);
        else if (mode.equals("sasl")) sasl(bootstrap);
        else throw new IllegalArgumentException("mode " + mode);
        System.out.println("DONE");
        System.exit(0);
    }

    static Admin admin(String bootstrap) {
        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20000);
        ac.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(ac);
    }

    /** The topic's id once describeTopics (by name) shows every partition with a leader. */
    static Uuid waitTopic(Admin admin, String topic, int parts) throws Exception {
        long deadline = System.currentTimeMillis() + 30000;
        while (true) {
            try {
                TopicDescription td =
                    admin.describeTopics(List.of(topic)).allTopicNames().get(20, TimeUnit.SECONDS).get(topic);
                if (td.partitions().size() == parts && td.partitions().stream().allMatch(p -> p.leader() != null))
                    return td.topicId();
            } catch (ExecutionException e) {
                if (System.currentTimeMillis() > deadline) throw e;
            }
            if (System.currentTimeMillis() > deadline)
                throw new IllegalStateException("topic " + topic + " not ready within 30 s");
            Thread.sleep(100);
        }
    }

    static void describe(String bootstrap, String prefix) throws Exception {
        String main = prefix + "-described";
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(new NewTopic(main, PARTS, (short) 1))).all().get(30, TimeUnit.SECONDS);
            Uuid mainId = waitTopic(admin, main, PARTS);
            emit("created", new J().str("topic", main).str("topic_id", mainId.toString()));

            // ---- describeTopics by id: Metadata v12+ naming the topics by id (the 3.9 client
            // leaves each topic's name at its default, "")
            try {
                Map<Uuid, TopicDescription> m = admin.describeTopics(TopicCollection.ofTopicIds(List.of(mainId)))
                    .allTopicIds().get(30, TimeUnit.SECONDS);
                TopicDescription td = m.get(mainId);
                List<String> leaders = new ArrayList<>();
                if (td != null)
                    td.partitions().forEach(p -> leaders.add(p.partition() + ":" + (p.leader() == null ? -1 : p.leader().id())));
                emit("describe_by_id", new J().bool("ok", true).strs("ids", m.keySet().stream().map(Uuid::toString).toList())
                    .str("name", td == null ? null : td.name())
                    .str("topic_id", td == null ? null : String.valueOf(td.topicId()))
                    .num("partitions", td == null ? -1 : td.partitions().size())
                    .strs("leaders", leaders));
            } catch (Exception e) {
                emit("describe_by_id", failure(e));
            }
            Uuid unknown = Uuid.randomUuid();
            try {
                Map<Uuid, TopicDescription> m = admin.describeTopics(TopicCollection.ofTopicIds(List.of(unknown)))
                    .allTopicIds().get(30, TimeUnit.SECONDS);
                emit("describe_unknown_id", new J().bool("ok", true).str("got", m.toString()));
            } catch (Exception e) {
                emit("describe_unknown_id", failure(e).str("id", unknown.toString()));
            }
        }
    }

    static void ids(String bootstrap, String prefix) throws Exception {
        String main = prefix + "-ids", doomed = prefix + "-doomed";
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(new NewTopic(main, PARTS, (short) 1), new NewTopic(doomed, 1, (short) 1)))
                .all().get(30, TimeUnit.SECONDS);
            Uuid mainId = waitTopic(admin, main, PARTS);
            Uuid doomedId = waitTopic(admin, doomed, 1);
            emit("created", new J().str("topic", main).str("topic_id", mainId.toString())
                .str("doomed", doomed).str("doomed_id", doomedId.toString()));

            // ---- produce, then read back with a consumer that fetches by topic id
            Properties pc = new Properties();
            pc.put("bootstrap.servers", bootstrap);
            pc.put("linger.ms", 5);
            pc.put("key.serializer", ByteArraySerializer.class.getName());
            pc.put("value.serializer", ByteArraySerializer.class.getName());
            Map<Integer, Integer> perPart = new TreeMap<>();
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pc)) {
                List<Future<RecordMetadata>> futs = new ArrayList<>();
                for (int i = 0; i < RECORDS; i++) {
                    int p = i % PARTS;
                    long off = i / PARTS;  // the topic is new: dense offsets from 0
                    futs.add(producer.send(new ProducerRecord<>(main, p, b("k" + i), b(value(p, off)))));
                }
                for (Future<RecordMetadata> f : futs) {
                    RecordMetadata md = f.get(30, TimeUnit.SECONDS);
                    perPart.merge(md.partition(), 1, Integer::sum);
                }
            }
            Properties cc = new Properties();
            cc.put("bootstrap.servers", bootstrap);
            cc.put("group.protocol", "classic");
            cc.put("enable.auto.commit", "false");
            cc.put("fetch.max.wait.ms", 100);
            cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
            cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
            int consumed = 0;
            List<String> mismatches = new ArrayList<>();
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc)) {
                List<TopicPartition> tps = new ArrayList<>();
                for (int p = 0; p < PARTS; p++) tps.add(new TopicPartition(main, p));
                consumer.assign(tps);
                consumer.seekToBeginning(tps);
                long deadline = System.currentTimeMillis() + 30000;
                while (consumed < RECORDS && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                        consumed++;
                        String want = value(r.partition(), r.offset());
                        String got = new String(r.value(), StandardCharsets.UTF_8);
                        if (!want.equals(got) && mismatches.size() < 10)
                            mismatches.add(r.partition() + "@" + r.offset() + ": " + got + " != " + want);
                    }
                }
                emit("fetch_by_id", new J().bool("ok", true).num("produced", RECORDS).num("consumed", consumed)
                    .strs("mismatches", mismatches)
                    .strs("produced_per_partition", perPart.entrySet().stream().map(e -> e.getKey() + ":" + e.getValue()).toList()));
            } catch (Exception e) {
                emit("fetch_by_id", failure(e).num("consumed", consumed));
            }

            // ---- deleteTopics by id (DeleteTopics v6 with ids)
            try {
                admin.deleteTopics(TopicCollection.ofTopicIds(List.of(doomedId))).all().get(30, TimeUnit.SECONDS);
                boolean gone = false;
                long deadline = System.currentTimeMillis() + 15000;
                Set<String> names = Set.of();
                while (System.currentTimeMillis() < deadline) {
                    names = admin.listTopics().names().get(20, TimeUnit.SECONDS);
                    if (!names.contains(doomed)) {
                        gone = true;
                        break;
                    }
                    Thread.sleep(100);
                }
                emit("delete_by_id", new J().bool("ok", true).bool("gone", gone).bool("main_still_listed", names.contains(main)));
            } catch (Exception e) {
                emit("delete_by_id", failure(e));
            }
            Uuid unknown2 = Uuid.randomUuid();
            try {
                admin.deleteTopics(TopicCollection.ofTopicIds(List.of(unknown2))).all().get(30, TimeUnit.SECONDS);
                emit("delete_unknown_id", new J().bool("ok", true));
            } catch (Exception e) {
                emit("delete_unknown_id", failure(e).str("id", unknown2.toString()));
            }
        }
    }

    static void sasl(String bootstrap) {
        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ac.put("security.protocol", "SASL_PLAINTEXT");
        ac.put("sasl.mechanism", "PLAIN");
        ac.put("sasl.jaas.config",
               "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p\";");
        ac.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 60000);
        long t0 = System.nanoTime();
        try (Admin admin = Admin.create(ac)) {
            try {
                Set<String> names = admin.listTopics().names().get(90, TimeUnit.SECONDS);
                emit("sasl_list_topics", new J().bool("ok", true).num("elapsed_ms", (System.nanoTime() - t0) / 1_000_000)
                    .strs("names", names));
            } catch (Exception e) {
                emit("sasl_list_topics", failure(e).num("elapsed_ms", (System.nanoTime() - t0) / 1_000_000));
            }
        }
    }
}
