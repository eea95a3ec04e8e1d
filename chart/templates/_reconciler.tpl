{{- /*
_reconciler.tpl owns the one hook Job definition; job-reconcile.yaml and job-drain.yaml include it
with their phase: `reconcile` on post-install/post-upgrade, `drain` on pre-upgrade.
*/ -}}

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
    metadata:
      labels:
        {{- include "valkey.labels" (dict "root" $root "component" "reconciler") | nindent 8 }}
    spec:
      restartPolicy: {{ $root.Values.hooks.restartPolicy }}
      serviceAccountName: {{ include "valkey.reconcilerName" $root }}
      # The reconciler reads pods (node placement) through the Kubernetes API.
      automountServiceAccountToken: true
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "valkey.reconcilerPodSecurityContext" $root | nindent 8 }}
      containers:
        - name: reconciler
          image: {{ include "valkey.imageRef" $root.Values.cluster.reconcilerImage | quote }}
          imagePullPolicy: {{ include "valkey.imagePullPolicy" $root.Values.cluster.reconcilerImage }}
          args:
            - {{ .phase }}
          env:
            {{- include "valkey.reconcilerEnv" $root | nindent 12 }}
          {{- with $root.Values.hooks.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- include "valkey.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 16Mi
{{- end -}}
