// Java kafka-clients driver for tests/e2e/test_java_client.py. Compiled with javac at
// test time against tests/e2e/.deps/java/*.jar.
//
//   java StrataE2E <bootstrap> <topic> <codec> <count>
//
// Admin createTopics (3 partitions) + describeTopics; a default-config producer
// (idempotence on, acks=all) with the given compression sends <count> keyed records
// with headers to partition i % 3; admin listOffsets (earliest/latest/timestamp 0);
// a group-less consumer assign()s + seekToBeginning() and checks every record.
// Prints one line "RESULT {json}" on stdout.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class StrataE2E {
    static final int PARTS = 3;

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static byte[] key(int i) { return b("jkey-" + i); }

    static byte[] value(int i) {
        StringBuilder sb = new StringBuilder("jvalue-").append(i).append('-');
        for (int k = 0; k < i % 23; k++) sb.append("0123456789");
        return b(sb.toString());
    }

    static List<Header> headers(int i) {
        return List.of(new RecordHeader("idx", b(Integer.toString(i))),
                       new RecordHeader("bin", new byte[] {0, (byte) 0xff, (byte) (i & 0xff)}));
    }

    static String q(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], codec = args[2];
        int count = Integer.parseInt(args[3]);
        // "consume": only read the topic back (after a broker restart).
        boolean consumeOnly = args.length > 4 && args[4].equals("consume");
        List<String> mismatches = new ArrayList<>();
        StringBuilder out = new StringBuilder("{");
        out.append("\"codec\":").append(q(codec));
        if (!consumeOnly) produceAndDescribe(bootstrap, topic, codec, count, mismatches, out);
        consumeAll(bootstrap, topic, count, mismatches, out);
        System.out.println("RESULT " + out);
        System.exit(0);
    }

    static void produceAndDescribe(String bootstrap, String topic, String codec, int count, List<String> mismatches,
                                   StringBuilder out) throws Exception {

        Properties ac = new Properties();
        ac.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ac.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 30000);
        try (Admin admin = Admin.create(ac)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTS, (short) 1))).all().get(60, TimeUnit.SECONDS);
            out.append(",\"created\":true");
            TopicDescription td = null;
            long deadline = System.currentTimeMillis() + 30000;
            while (true) {
                try {
                    td = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
                    if (td.partitions().size() == PARTS && td.partitions().stream().allMatch(p -> p.leader() != null)) break;
                } catch (java.util.concurrent.ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                }
                if (System.currentTimeMillis() > deadline) break;
                Thread.sleep(100);
            }
            out.append(",\"describe\":{\"name\":").append(q(td.name()))
               .append(",\"internal\":").append(td.isInternal())
               .append(",\"topic_id\":").append(q(String.valueOf(td.topicId())))
               .append(",\"partitions\":[");
            boolean first = true;
            for (TopicPartitionInfo p : td.partitions()) {
                if (!first) out.append(',');
                first = false;
                out.append("{\"partition\":").append(p.partition())
                   .append(",\"leader\":").append(p.leader() == null ? -1 : p.leader().id())
                   .append(",\"replicas\":").append(p.replicas().size())
                   .append(",\"isr\":").append(p.isr().size()).append('}');
            }
            out.append("]}");

            // ---- produce (default config: enable.idempotence=true, acks=all)
            Properties pc = new Properties();
            pc.put("bootstrap.servers", bootstrap);
            pc.put("compression.type", codec);
            pc.put("linger.ms", 5);
            pc.put("key.serializer", ByteArraySerializer.class.getName());
            pc.put("value.serializer", ByteArraySerializer.class.getName());
            long[] nextOffset = new long[PARTS];
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pc)) {
                List<Future<RecordMetadata>> futs = new ArrayList<>(count);
                for (int i = 0; i < count; i++) {
                    futs.add(producer.send(new ProducerRecord<>(topic, i % PARTS, null, key(i), value(i), headers(i))));
                }
                producer.flush();
                for (int i = 0; i < count; i++) {
                    RecordMetadata md = futs.get(i).get(60, TimeUnit.SECONDS);
                    int p = i % PARTS;
                    if (md.partition() != p || md.offset() != nextOffset[p]) {
                        if (mismatches.size() < 20)
                            mismatches.add("ack " + i + ": p" + md.partition() + "@" + md.offset() + " expected p" + p + "@" + nextOffset[p]);
                    }
                    nextOffset[p]++;
                }
            }
            out.append(",\"produced\":").append(count);

            // ---- admin listOffsets
            Map<TopicPartition, OffsetSpec> earliest = new HashMap<>(), latest = new HashMap<>(), ts0 = new HashMap<>();
            for (int p = 0; p < PARTS; p++) {
                TopicPartition tp = new TopicPartition(topic, p);
                earliest.put(tp, OffsetSpec.earliest());
                latest.put(tp, OffsetSpec.latest());
                ts0.put(tp, OffsetSpec.forTimestamp(0));
            }
            var e = admin.listOffsets(earliest).all().get(30, TimeUnit.SECONDS);
            var l = admin.listOffsets(latest).all().get(30, TimeUnit.SECONDS);
            var t = admin.listOffsets(ts0).all().get(30, TimeUnit.SECONDS);
            out.append(",\"list_offsets\":{");
            for (int p = 0; p < PARTS; p++) {
                TopicPartition tp = new TopicPartition(topic, p);
                if (p > 0) out.append(',');
                out.append('"').append(p).append("\":{\"earliest\":").append(e.get(tp).offset())
                   .append(",\"latest\":").append(l.get(tp).offset())
                   .append(",\"ts0\":").append(t.get(tp).offset()).append('}');
            }
            out.append('}');
        }
    }

    static void consumeAll(String bootstrap, String topic, int count, List<String> mismatches, StringBuilder out)
            throws Exception {
        // ---- consume: no group.id, assign + seekToBeginning
        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("enable.auto.commit", "false");
        cc.put("fetch.max.wait.ms", 100);
        cc.put("max.poll.records", 5000);
        cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
        int consumed = 0;
        long[] expectOffset = new long[PARTS];
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTS; p++) tps.add(new TopicPartition(topic, p));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 90000;
            while (consumed < count && System.currentTimeMillis() < deadline) {
                ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    int p = r.partition();
                    long off = r.offset();
                    int i = (int) (off * PARTS + p); // record i went to partition i%3 at offset i/3
                    String problem = null;
                    if (off != expectOffset[p]) problem = "offset " + off + " expected " + expectOffset[p];
                    else if (!Arrays.equals(r.key(), key(i))) problem = "key " + new String(r.key(), StandardCharsets.UTF_8);
                    else if (!Arrays.equals(r.value(), value(i))) problem = "value differs";
                    else {
                        Header[] hs = r.headers().toArray();
                        List<Header> want = headers(i);
                        if (hs.length != want.size()) problem = "headers: " + hs.length;
                        else for (int k = 0; k < hs.length; k++)
                            if (!hs[k].key().equals(want.get(k).key()) || !Arrays.equals(hs[k].value(), want.get(k).value()))
                                problem = "header " + k + " differs";
                    }
                    if (problem != null && mismatches.size() < 20) mismatches.add("p" + p + "@" + off + ": " + problem);
                    expectOffset[p] = off + 1;
                    consumed++;
                }
            }
        }
        out.append(",\"consumed\":").append(consumed);
        out.append(",\"mismatches\":[");
        for (int k = 0; k < mismatches.size(); k++) out.append(k > 0 ? "," : "").append(q(mismatches.get(k)));
        out.append("]}");
    }
}
