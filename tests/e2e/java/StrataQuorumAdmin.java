// Java kafka-clients driver for tests/e2e/test_cluster.py: the Admin calls that Kafka's
// kafka-metadata-quorum.sh makes, with `bootstrap.controllers` (KIP-919), against the
// CONTROLLER listeners. Compiled with javac at test time against tests/e2e/.deps/java4/*.jar.
//
//   java StrataQuorumAdmin <bootstrap-controllers> describe
//   java StrataQuorumAdmin <bootstrap-controllers> remove <voter-id>
//   java StrataQuorumAdmin <bootstrap-controllers> add <voter-id> <host> <port>
//
// Prints one "RESULT {json}" line: the quorum (leader, voters, observers) after the call.
import java.util.*;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.Uuid;

public class StrataQuorumAdmin {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.controllers", args[0]);
        p.put("request.timeout.ms", "60000");
        p.put("default.api.timeout.ms", "90000");
        try (Admin admin = Admin.create(p)) {
            switch (args[1]) {
                case "remove":
                    admin.removeRaftVoter(Integer.parseInt(args[2]), Uuid.randomUuid()).all().get();
                    break;
                case "add":
                    admin.addRaftVoter(Integer.parseInt(args[2]), Uuid.randomUuid(),
                        Set.of(new RaftVoterEndpoint("CONTROLLER", args[3], Integer.parseInt(args[4])))).all().get();
                    break;
                default:
                    break;
            }
            QuorumInfo q = admin.describeMetadataQuorum().quorumInfo().get();
            List<Integer> voters = q.voters().stream().map(QuorumInfo.ReplicaState::replicaId).sorted()
                .collect(Collectors.toList());
            List<Integer> observers = q.observers().stream().map(QuorumInfo.ReplicaState::replicaId).sorted()
                .collect(Collectors.toList());
            System.out.println("RESULT {\"leader\": " + q.leaderId() + ", \"voters\": " + voters
                + ", \"observers\": " + observers + "}");
        }
    }
}
