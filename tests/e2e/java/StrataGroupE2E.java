// Java kafka-clients group consumer driver for tests/e2e/test_groups_clients.py. Compiled
// with javac at test time against tests/e2e/.deps/java/*.jar.
//
//   java StrataGroupE2E <bootstrap> <topic> <group> <classic|consumer> <limit> <timeout_ms>
//
// subscribe()s to <topic> in <group> with group.protocol=<classic|consumer> (auto commit
// off, auto.offset.reset=earliest), processes records one by one until exactly <limit>
// were processed, then commitSync()s the position after the last processed record of each
// partition it processed, reads them back with committed() (OffsetFetch) and close()s.
// Prints one line "RESULT {json}" on stdout:
//   {"records":[[p,o],...], "committed":{"p":offset,...}, "fetched":{"p":offset,...},
//    "assignment":[p,...], "generation":n, "member_id":"...", "protocol":"..."}
// or {"error":"...", "type":"java class"} (exit 1) if the client throws.
import java.time.Duration;
import java.util.*;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class StrataGroupE2E {
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

    static String offsets(Map<TopicPartition, OffsetAndMetadata> m) {
        StringBuilder sb = new StringBuilder("{");
        new TreeMap<Integer, OffsetAndMetadata>(m.entrySet().stream().filter(e -> e.getValue() != null)
                .collect(java.util.stream.Collectors.toMap(e -> e.getKey().partition(), Map.Entry::getValue)))
            .forEach((p, om) -> sb.append(sb.length() > 1 ? "," : "").append('"').append(p).append("\":").append(om.offset()));
        return sb.append('}').toString();
    }

    public static void main(String[] args) {
        String bootstrap = args[0], topic = args[1], group = args[2], protocol = args[3];
        int limit = Integer.parseInt(args[4]);
        long timeoutMs = Long.parseLong(args[5]);
        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("group.id", group);
        cc.put("group.protocol", protocol);
        cc.put("client.id", "strata-e2e-java-" + protocol);
        cc.put("enable.auto.commit", "false");
        cc.put("auto.offset.reset", "earliest");
        cc.put("fetch.max.wait.ms", 100);
        cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
        StringBuilder out = new StringBuilder("{");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc)) {
            consumer.subscribe(List.of(topic));
            List<long[]> records = new ArrayList<>();
            Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
            long deadline = System.currentTimeMillis() + timeoutMs;
            outer:
            while (records.size() < limit) {
                if (System.currentTimeMillis() > deadline)
                    throw new RuntimeException("timeout: processed " + records.size() + "/" + limit
                        + ", assignment " + consumer.assignment());
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    records.add(new long[] {r.partition(), r.offset()});
                    commit.put(new TopicPartition(topic, r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    if (records.size() >= limit) break outer;
                }
            }
            consumer.commitSync(commit, Duration.ofSeconds(30));
            Map<TopicPartition, OffsetAndMetadata> fetched = consumer.committed(commit.keySet(), Duration.ofSeconds(30));
            out.append("\"records\":[");
            for (int i = 0; i < records.size(); i++)
                out.append(i > 0 ? "," : "").append('[').append(records.get(i)[0]).append(',').append(records.get(i)[1]).append(']');
            out.append("],\"committed\":").append(offsets(commit));
            out.append(",\"fetched\":").append(offsets(fetched));
            out.append(",\"assignment\":").append(consumer.assignment().stream().map(TopicPartition::partition).sorted().toList());
            out.append(",\"generation\":").append(consumer.groupMetadata().generationId());
            out.append(",\"member_id\":").append(q(consumer.groupMetadata().memberId()));
            out.append(",\"protocol\":").append(q(protocol)).append('}');
        } catch (Exception e) {
            e.printStackTrace();
            System.out.println("RESULT {\"error\":" + q(String.valueOf(e.getMessage())) + ",\"type\":" + q(e.getClass().getName()) + "}");
            System.exit(1);
        }
        System.out.println("RESULT " + out);
        System.exit(0);
    }
}
