// Java kafka-clients driver for tests/e2e/test_leader_epochs.py (KIP-320). Compiled with javac
// at test time against tests/e2e/.deps/java/*.jar.
//
//   java StrataEpochE2E consume <bootstrap> <topic> <group> <n>
//       A group consumer reads n records of partition 0 from the beginning and commits; the
//       committed offset carries the leader epoch of the last record read.
//   java StrataEpochE2E resume <bootstrap> <topic> <group> <n>
//       A new consumer of the group with auto.offset.reset=none starts at the committed offset
//       (whose epoch is now older than the partition's, so the client validates it with
//       OffsetForLeaderEpoch) and reads n more records. A truncation or reset is an error.
//
// Prints one "RESULT {json}" line on stdout.
import java.time.Duration;
import java.util.*;

import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class StrataEpochE2E {
    public static void main(String[] args) {
        String mode = args[0], bootstrap = args[1], topic = args[2], group = args[3];
        int n = Integer.parseInt(args[4]);
        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", group);
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", mode.equals("consume") ? "earliest" : "none");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        TopicPartition tp = new TopicPartition(topic, 0);
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        String error = null;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            try {
                while (got.size() < n && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) got.add(r);
                }
            } catch (LogTruncationException | NoOffsetForPartitionException e) {
                error = e.getClass().getSimpleName() + ": " + e.getMessage();
            }
            if (mode.equals("consume") && error == null) {
                c.commitSync();
                OffsetAndMetadata committed = c.committed(Set.of(tp)).get(tp);
                System.out.println("RESULT {\"consumed\": " + got.size() + ", \"committed\": " + committed.offset()
                    + ", \"committed_epoch\": " + committed.leaderEpoch().orElse(-1) + "}");
                return;
            }
        }
        if (error != null) {
            System.out.println("RESULT {\"error\": \"" + error.replace("\"", "'") + "\"}");
            return;
        }
        long first = got.isEmpty() ? -1 : got.get(0).offset();
        int epoch = got.isEmpty() ? -1 : got.get(got.size() - 1).leaderEpoch().orElse(-1);
        System.out.println("RESULT {\"consumed\": " + got.size() + ", \"first_offset\": " + first
            + ", \"epoch_of_new_records\": " + epoch + "}");
    }
}
