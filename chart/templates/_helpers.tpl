{{- /*
_helpers.tpl owns every object name, label set, image reference and derived value of the chart;
templates never build a name themselves.
*/ -}}

{{/* The cluster name (`name`, or the release name): object names and the reconciler's pod addresses derive from it. */}}
{{- define "valkey.name" -}}
{{- $name := .Values.name | default .Release.Name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "name %q is not a DNS label: use lower-case letters, digits and '-' (set `name`)" $name) -}}
{{- end -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "name %q is longer than 40 characters, so `valkey-<name>-headless` and the StatefulSet's pod labels would exceed Kubernetes' 63-character limit: set a shorter `name`" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The namespace of every object: `namespace`, or the release namespace, so the original `namespace` key keeps working. */}}
{{- define "valkey.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* StatefulSet, PDB and NetworkPolicy name `valkey-<name>`: the original chart's name, which pod DNS names depend on. */}}
{{- define "valkey.fullname" -}}
{{- printf "valkey-%s" (include "valkey.name" .) -}}
{{- end -}}

{{/* Headless Service: gives every pod the DNS name the reconciler dials. */}}
{{- define "valkey.headlessServiceName" -}}
{{- printf "%s-headless" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* Client Service `valkey-<name>-cluster`: the seed address applications keep using. */}}
{{- define "valkey.clientServiceName" -}}
{{- printf "%s-cluster" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* Metrics Service: a separate Service so a ServiceMonitor scrapes every pod, ready or not. */}}
{{- define "valkey.metricsServiceName" -}}
{{- printf "%s-metrics" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* ConfigMap with the valkey.conf / users.acl templates and overrides.conf. */}}
{{- define "valkey.configMapName" -}}
{{- printf "%s-config" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* Secret with the admin and client passwords: the user's (`credentials.secret`) or the generated one. */}}
{{- define "valkey.credentialsSecretName" -}}
{{- .Values.credentials.secret | default (printf "%s-credentials" (include "valkey.fullname" .)) -}}
{{- end -}}

{{/* Generated Secret with the replication, reconciler and monitor passwords (never the user's). */}}
{{- define "valkey.internalSecretName" -}}
{{- printf "%s-internal" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* ServiceAccount, Role and RoleBinding of the reconciler: one name for the three. */}}
{{- define "valkey.reconcilerName" -}}
{{- printf "%s-reconciler" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* The reconciler's Lease (coordination.k8s.io): the name valkey_reconciler.lock.lease_name gives it; the Role allows only this one. */}}
{{- define "valkey.leaseName" -}}
{{- printf "%s-reconciler" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* CronJob of the scheduled heal runs: `kubectl logs job/<this>-<n>` finds a run's log. */}}
{{- define "valkey.healName" -}}
{{- printf "%s-heal" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* Hook Job name for a phase (`reconcile`, `drain`): `kubectl logs job/<this>` finds its log. */}}
{{- define "valkey.jobName" -}}
{{- printf "%s-%s" (include "valkey.fullname" .root) .phase -}}
{{- end -}}

{{/* `helm test` pod name for a check (`status`, `acl`). */}}
{{- define "valkey.testName" -}}
{{- printf "%s-test-%s" (include "valkey.fullname" .root) .check -}}
{{- end -}}

{{/* Label a client pod carries to be let in on 6379 by the NetworkPolicy, from any namespace. */}}
{{- define "valkey.clientLabelKey" -}}
{{- printf "%s-client" (include "valkey.fullname" .) -}}
{{- end -}}

{{/* `helm.sh/chart` label value: chart name and version (never in a selector). */}}
{{- define "valkey.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{/* Selector labels for a component (`server`, `reconciler`, `test`): stable across upgrades, so no version. */}}
{{- define "valkey.selectorLabels" -}}
app.kubernetes.io/name: valkey
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full label set of an object of a component: selector labels plus chart, version and manager. */}}
{{- define "valkey.labels" -}}
{{ include "valkey.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "valkey.fullname" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "valkey.chart" .root }}
{{- end -}}

{{/* Pod template labels: no chart or app version, so a chart release that changes nothing in the pod does not restart a database. */}}
{{- define "valkey.podLabels" -}}
{{ include "valkey.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "valkey.fullname" .root }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* An image reference from a `registry/repo:tag` string or a `{repository, tag, digest}` object (both forms are accepted). */}}
{{- define "valkey.imageRef" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- $ref := .repository -}}
{{- if .tag }}{{ $ref = printf "%s:%s" $ref (toString .tag) }}{{ end -}}
{{- if .digest }}{{ $ref = printf "%s@%s" $ref .digest }}{{ end -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* Pull policy of an image value: the object's `pullPolicy`, else IfNotPresent (tags are pinned). */}}
{{- define "valkey.imagePullPolicy" -}}
{{- if and (kindIs "map" .) .pullPolicy -}}
{{- .pullPolicy -}}
{{- else -}}
IfNotPresent
{{- end -}}
{{- end -}}

{{/* `cluster.masters` as an integer: k3s' HelmChart `set:` may pass it as a string of digits. */}}
{{- define "valkey.masters" -}}
{{- int .Values.cluster.masters -}}
{{- end -}}

{{/* `cluster.replicasPerMaster` as an integer (string of digits accepted, as above). */}}
{{- define "valkey.replicasPerMaster" -}}
{{- int .Values.cluster.replicasPerMaster -}}
{{- end -}}

{{/* StatefulSet replicas: masters × (1 + replicasPerMaster), the pods the reconciler expects. */}}
{{- define "valkey.podCount" -}}
{{- mul (int (include "valkey.masters" .)) (add 1 (int (include "valkey.replicasPerMaster" .))) -}}
{{- end -}}

{{/* `persistence` normalised to the VALKEY_PERSISTENCE contract: `rdb,aof`, `rdb`, `aof` or empty, from a string, a list or null. */}}
{{- define "valkey.persistence" -}}
{{- $p := .Values.persistence -}}
{{- $modes := list -}}
{{- if kindIs "slice" $p -}}
{{- $modes = $p -}}
{{- else if $p -}}
{{- $modes = splitList "," (toString $p) -}}
{{- end -}}
{{- $out := list -}}
{{- if has "rdb" $modes }}{{ $out = append $out "rdb" }}{{ end -}}
{{- if has "aof" $modes }}{{ $out = append $out "aof" }}{{ end -}}
{{- join "," $out -}}
{{- end -}}

{{/* Bytes of a Kubernetes memory quantity (`512Mi`, `1G`, `1.5Gi`, `536870912`), for maxmemory. */}}
{{- define "valkey.quantityBytes" -}}
{{- $q := . -}}
{{- if not (kindIs "string" $q) -}}
{{- int64 $q -}}
{{- else -}}
{{- $m := regexFindAll "^([0-9]+(?:\\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$" $q 1 -}}
{{- if not $m -}}
{{- fail (printf "resources.limits.memory %q: cannot derive maxmemory from it; use a quantity like 512Mi or set `maxmemory` explicitly" $q) -}}
{{- end -}}
{{- $num := regexReplaceAll "[A-Za-z]+$" $q "" -}}
{{- $unit := regexReplaceAll "^[0-9.]+" $q "" -}}
{{- $factors := dict "" 1 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 -}}
{{- int64 (floor (mulf (float64 $num) (get $factors $unit))) -}}
{{- end -}}
{{- end -}}

{{/* maxmemory line value: `maxmemory` if set, else limits.memory × maxmemoryPercent / 100 in bytes, else empty. */}}
{{- define "valkey.maxmemory" -}}
{{- if not (kindIs "invalid" .Values.maxmemory) -}}
{{- if kindIs "string" .Values.maxmemory }}{{ .Values.maxmemory }}{{ else }}{{ int64 .Values.maxmemory }}{{ end -}}
{{- else -}}
{{- $limit := dig "limits" "memory" "" (.Values.resources | default dict) -}}
{{- if $limit -}}
{{- $bytes := include "valkey.quantityBytes" $limit -}}
{{- int64 (floor (divf (mulf (float64 $bytes) (float64 .Values.maxmemoryPercent)) 100)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* overrides.conf: chart-generated valkey.conf lines the entrypoint includes last (no passwords, no `${}` substitution). */}}
{{- define "valkey.overridesConf" -}}
# Generated by the chart from its values; included after valkey.conf, so these lines win.
{{- $maxmemory := include "valkey.maxmemory" . }}
{{- if $maxmemory }}
maxmemory {{ $maxmemory }}
{{- end }}
{{- if .Values.maxmemoryPolicy }}
maxmemory-policy {{ .Values.maxmemoryPolicy }}
{{- end }}
{{- if not (kindIs "invalid" .Values.cluster.nodeTimeoutMs) }}
cluster-node-timeout {{ int64 .Values.cluster.nodeTimeoutMs }}
{{- end }}
{{- with .Values.extraConfig }}
# extraConfig
{{ trim . }}
{{- end }}
{{ end -}}

{{/* The reconciler's pod address scheme, fully rendered except `{ordinal}` (VALKEY_POD_ADDRESS). */}}
{{- define "valkey.podAddress" -}}
{{- printf "%s-{ordinal}.%s.%s.svc.%s" (include "valkey.fullname" .) (include "valkey.headlessServiceName" .) (include "valkey.namespace" .) .Values.clusterDomain -}}
{{- end -}}

{{/*
Generated passwords, decided once per render and shared by the Secrets and the checksum annotations
(a second randAlphaNum would differ). An existing Secret's value wins (lookup), so passwords stay the
same across upgrades; `helm template` has no cluster and gets fresh random values.
*/}}
{{- define "valkey.generatedPasswords" -}}
{{- if not (hasKey .Values "__valkeyGenerated") -}}
{{- $ns := include "valkey.namespace" . -}}
{{- $generated := dict -}}
{{- $wanted := dict -}}
{{- if not .Values.credentials.secret -}}
{{- $_ := set $wanted (printf "%s-credentials" (include "valkey.fullname" .)) (list .Values.credentials.dataKeys.adminPassword .Values.credentials.dataKeys.clientPassword) -}}
{{- end -}}
{{- $_ := set $wanted (include "valkey.internalSecretName" .) (list "replication-password" "reconciler-password" "monitor-password") -}}
{{- range $secretName, $keys := $wanted -}}
{{- $existing := (lookup "v1" "Secret" $ns $secretName) | default dict -}}
{{- $data := dict -}}
{{- range $keys -}}
{{- $old := dig "data" . "" $existing -}}
{{- $_ := set $data . ($old | default (randAlphaNum 40 | b64enc)) -}}
{{- end -}}
{{- $_ := set $generated $secretName $data -}}
{{- end -}}
{{- $_ := set .Values "__valkeyGenerated" $generated -}}
{{- end -}}
{{- toJson (get .Values "__valkeyGenerated") -}}
{{- end -}}

{{/* Checksum of the credentials in use, so rotating them rolls the pods: the generated data, or the user's Secret as lookup sees it. */}}
{{- define "valkey.credentialsChecksum" -}}
{{- if .Values.credentials.secret -}}
{{- $existing := (lookup "v1" "Secret" (include "valkey.namespace" .) .Values.credentials.secret) | default dict -}}
{{- printf "%s/%s/%s/%s" .Values.credentials.secret .Values.credentials.dataKeys.adminPassword .Values.credentials.dataKeys.clientPassword (toJson (get $existing "data")) | sha256sum -}}
{{- else -}}
{{- get (include "valkey.generatedPasswords" . | fromJson) (include "valkey.credentialsSecretName" .) | toJson | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* The nodes' cluster-node-timeout: the value given, else valkey.conf's; the reconciler restores it after a fast join. */}}
{{- define "valkey.nodeTimeoutMs" -}}
{{- if kindIs "invalid" .Values.cluster.nodeTimeoutMs -}}5000{{- else -}}{{ int64 .Values.cluster.nodeTimeoutMs }}{{- end -}}
{{- end -}}

{{/* Environment of a reconciler container (hook Jobs and `helm test`): the settings docs/design.md names. */}}
{{- define "valkey.reconcilerEnv" -}}
- name: VALKEY_CLUSTER_NAME
  value: {{ include "valkey.name" . | quote }}
- name: VALKEY_NAMESPACE
  value: {{ include "valkey.namespace" . | quote }}
- name: VALKEY_MASTERS
  value: {{ include "valkey.masters" . | quote }}
- name: VALKEY_REPLICAS_PER_MASTER
  value: {{ include "valkey.replicasPerMaster" . | quote }}
- name: VALKEY_USER
  value: reconciler
- name: VALKEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "valkey.internalSecretName" . }}
      key: reconciler-password
- name: VALKEY_PORT
  value: {{ include "valkey.clientPort" . | quote }}
- name: VALKEY_POD_ADDRESS
  value: {{ include "valkey.podAddress" . | quote }}
- name: VALKEY_PERSISTENCE
  value: {{ include "valkey.persistence" . | quote }}
- name: VALKEY_TIMEOUT_SECONDS
  value: {{ int .Values.hooks.timeoutSeconds | quote }}
- name: VALKEY_ROLL_ALLOW_DATA_LOSS
  value: {{ .Values.rollout.allowDataLoss | toString | quote }}
- name: VALKEY_NODE_TIMEOUT_MS
  value: {{ include "valkey.nodeTimeoutMs" . | quote }}
- name: VALKEY_FAST_JOIN
  value: {{ ternary "on" "off" (ne .Values.cluster.fastJoin false) | quote }}
- name: LOG_FORMAT
  value: json
{{- end -}}

{{/* Pod securityContext of the reconciler and test pods: non-root uid 10001, RuntimeDefault seccomp. */}}
{{- define "valkey.reconcilerPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container securityContext shared by every container of the chart: read-only root, no privilege, no capabilities. */}}
{{- define "valkey.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* Client port (design contract): one place for the number 6379. */}}
{{- define "valkey.clientPort" -}}
6379
{{- end -}}

{{/* Cluster bus port (client port + 10000, unauthenticated: only this cluster's pods may reach it). */}}
{{- define "valkey.busPort" -}}
16379
{{- end -}}
