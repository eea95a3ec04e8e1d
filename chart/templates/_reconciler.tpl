{{- /*
_reconciler.tpl owns the one reconciler pod template and the Jobs built on it: job-reconcile.yaml and
job-drain.yaml include the hook Job with their phase (`reconcile` on post-install/post-upgrade, `drain`
on pre-upgrade), cronjob-heal.yaml puts the same pod template in its jobTemplate.
*/ -}}

{{/* The reconciler pod template (labels + pod spec) shared by the hook Jobs and the heal CronJob: dict "root" $ "args" (list) "extraEnv" (list of EnvVar, optional). */}}
{{- define "valkey.reconcilerPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "valkey.labels" (dict "root" $root "component" "reconciler") | nindent 4 }}
spec:
  restartPolicy: {{ $root.Values.hooks.restartPolicy }}
  serviceAccountName: {{ include "valkey.reconcilerName" $root }}
  # The reconciler reads pods (node placement) and holds its Lease through the Kubernetes API.
  automountServiceAccountToken: true
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "valkey.reconcilerPodSecurityContext" $root | nindent 4 }}
  containers:
    - name: reconciler
      image: {{ include "valkey.imageRef" $root.Values.cluster.reconcilerImage | quote }}
      imagePullPolicy: {{ include "valkey.imagePullPolicy" $root.Values.cluster.reconcilerImage }}
      args:
        {{- toYaml .args | nindent 8 }}
      env:
        {{- include "valkey.reconcilerEnv" $root | nindent 8 }}
        {{- with .extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.hooks.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "valkey.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
{{- end -}}

{{/* A reconciler hook Job for a phase: dict "root" $ "phase" "reconcile"|"drain" "hook" "<helm.sh/hook value>" "weight" "<n>". */}}
{{- define "valkey.reconcilerJob" -}}
{{- $root := .root -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "valkey.jobName" . }}
  namespace: {{ include "valkey.namespace" $root }}
  labels:
    {{- include "valkey.labels" (dict "root" $root "component" "reconciler") | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: {{ .weight | quote }}
    helm.sh/hook-delete-policy: {{ $root.Values.hooks.hookDeletePolicy }}
spec:
  backoffLimit: {{ int $root.Values.hooks.backoffLimit }}
  {{- if not (kindIs "invalid" $root.Values.hooks.ttlSecondsAfterFinished) }}
  ttlSecondsAfterFinished: {{ int $root.Values.hooks.ttlSecondsAfterFinished }}
  {{- end }}
  template:
    {{- include "valkey.reconcilerPodTemplate" (dict "root" $root "args" (list .phase)) | nindent 4 }}
{{- end -}}
