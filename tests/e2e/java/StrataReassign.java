// Java kafka-clients driver for tests/e2e/test_replication.py: partition reassignment
// (KIP-455) through Admin.alterPartitionReassignments / listPartitionReassignments, as
// kafka-reassign-partitions.sh makes them. Compiled at test time against tests/e2e/.deps.
//
//   java StrataReassign <bootstrap> <topic> <partition>=<b1,b2,...>|<partition>=cancel ... [--no-wait]
//   java StrataReassign <bootstrap> <topic>      (only the "after" description)
//
// Prints one "CHECK {json}" line per partition with the outcome of the request (the
// exception's class on failure), then, once listPartitionReassignments shows none of them in
// progress (or after 60 s), one "CHECK" line "after" with each partition's replicas and ISR
// (and eligible leader replicas, KIP-966) as describeTopics gives them and the seconds the reassignments took, then "DONE". With
// --no-wait it prints "DONE" right after the request's outcomes.
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;

public class StrataReassign {
    static String ids(List<?> nodes) {
        return nodes.stream().map(Object::toString).collect(Collectors.joining(",", "[", "]"));
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("request.timeout.ms", "30000");
        p.put("default.api.timeout.ms", "60000");
        String topic = args[1];
        Map<TopicPartition, Optional<NewPartitionReassignment>> wanted = new LinkedHashMap<>();
        boolean wait = true;
        for (int i = 2; i < args.length; i++) {
            if (args[i].equals("--no-wait")) {
                wait = false;
                continue;
            }
            String[] kv = args[i].split("=");
            TopicPartition tp = new TopicPartition(topic, Integer.parseInt(kv[0]));
            if (kv[1].equals("cancel")) {
                wanted.put(tp, Optional.empty());
            } else {
                List<Integer> target = Arrays.stream(kv[1].split(",")).map(Integer::parseInt).collect(Collectors.toList());
                wanted.put(tp, Optional.of(new NewPartitionReassignment(target)));
            }
        }
        try (Admin admin = Admin.create(p)) {
            long started = System.nanoTime();
            Map<TopicPartition, org.apache.kafka.common.KafkaFuture<Void>> results =
                wanted.isEmpty() ? Map.of() : admin.alterPartitionReassignments(wanted).values();
            Set<TopicPartition> accepted = new HashSet<>();
            for (Map.Entry<TopicPartition, org.apache.kafka.common.KafkaFuture<Void>> e : results.entrySet()) {
                String outcome;
                try {
                    e.getValue().get();
                    outcome = "\"ok\"";
                    accepted.add(e.getKey());
                } catch (ExecutionException ex) {
                    outcome = "\"" + ex.getCause().getClass().getName() + "\"";
                }
                System.out.println("CHECK {\"check\": \"alter-" + e.getKey().partition() + "\", \"result\": " + outcome + "}");
            }
            if (!wait) {
                System.out.println("DONE");
                return;
            }
            long deadline = System.currentTimeMillis() + 60000;
            while (!accepted.isEmpty() && System.currentTimeMillis() < deadline) {
                Map<TopicPartition, PartitionReassignment> ongoing =
                    admin.listPartitionReassignments(accepted).reassignments().get();
                if (ongoing.isEmpty()) break;
                Thread.sleep(200);
            }
            double seconds = (System.nanoTime() - started) / 1e9;
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            StringBuilder after = new StringBuilder("{\"seconds\": " + seconds);
            for (TopicPartitionInfo info : d.partitions()) {
                after.append(", \"").append(info.partition()).append("\": {\"replicas\": ")
                    .append(ids(info.replicas().stream().map(n -> n.id()).collect(Collectors.toList())))
                    .append(", \"isr\": ").append(ids(info.isr().stream().map(n -> n.id()).collect(Collectors.toList())))
                    .append(", \"elr\": ").append(info.elr() == null ? "null" : ids(info.elr().stream().map(n -> n.id()).collect(Collectors.toList())))
                    .append(", \"leader\": ").append(info.leader() == null ? -1 : info.leader().id()).append("}");
            }
            after.append("}");
            System.out.println("CHECK {\"check\": \"after\", \"result\": " + after + "}");
            System.out.println("DONE");
        }
    }
}
