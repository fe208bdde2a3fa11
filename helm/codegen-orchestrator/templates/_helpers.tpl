{{/* Names and labels shared by every object of the chart. */}}

{{- define "orchestrator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "orchestrator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codegen-orchestrator
{{- end -}}

{{- define "orchestrator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A process name as a DNS label: telegram_bot -> telegram-bot. */}}
{{- define "orchestrator.component" -}}
{{- . | replace "_" "-" -}}
{{- end -}}

{{- define "orchestrator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The NATS subchart's object names, as its own "nats.fullname" makes them from the release. */}}
{{- define "orchestrator.natsFullname" -}}
{{- if contains "nats" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The subchart's NATS, addressed in the release's namespace. */}}
{{- define "orchestrator.natsUrl" -}}
{{- if not (or .Values.nats.enabled .Values.natsConnection.url) -}}
{{- fail "nats.enabled is false: set natsConnection.url (or natsConnection.existingSecret) to your NATS" -}}
{{- end -}}
{{- .Values.natsConnection.url | default (printf "nats://%s.%s.svc:4222" (include "orchestrator.natsFullname" .) .Release.Namespace) -}}
{{- end -}}

{{/* Each NATS server's monitoring URL (the lag exporter reads every one). */}}
{{- define "orchestrator.natsMonitorUrls" -}}
{{- if .Values.natsConnection.monitorUrls -}}
{{- .Values.natsConnection.monitorUrls -}}
{{- else if not .Values.nats.enabled -}}
{{- fail "nats.enabled is false: set natsConnection.monitorUrls to your NATS servers' monitoring URLs (comma separated)" -}}
{{- else -}}
{{- $nats := include "orchestrator.natsFullname" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.nats.config.cluster.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc:8222" $nats $i $nats $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end -}}

{{/* KEDA's NATS monitoring endpoint (host:port); KEDA finds each consumer's leader from it. */}}
{{- define "orchestrator.kedaNatsEndpoint" -}}
{{- if not (or .Values.nats.enabled .Values.keda.natsMonitoringEndpoint) -}}
{{- fail "nats.enabled is false: set keda.natsMonitoringEndpoint (host:port of your NATS monitoring endpoint)" -}}
{{- end -}}
{{- .Values.keda.natsMonitoringEndpoint | default (printf "%s-headless.%s.svc.cluster.local:8222" (include "orchestrator.natsFullname" .) .Release.Namespace) -}}
{{- end -}}

{{/* A process's ServiceAccount, which its Vault role is bound to. */}}
{{- define "orchestrator.serviceAccount" -}}
{{- printf "%s-%s" (include "orchestrator.fullname" .root) (include "orchestrator.component" .name) -}}
{{- end -}}

{{/* Whether a process uses PostgreSQL (`database: false` opts out). */}}
{{- define "orchestrator.usesDatabase" -}}
{{- if or (not (hasKey . "database")) .database }}true{{ end -}}
{{- end -}}

{{/* Where the database URL file lives in a pod (an in-memory volume). */}}
{{- define "orchestrator.credentialsDir" -}}/run/orchestrator{{- end -}}

{{/*
The volumes of a pod that logs in to Vault: its service account token projected for Vault (the
pod's default API token is not mounted), and, if it uses PostgreSQL, an in-memory directory for the
database URL. Called with (dict "root" $ "database" bool).
*/}}
{{- define "orchestrator.vaultVolumes" -}}
- name: vault-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .root.Values.vault.kubernetesAuth.audience | quote }}
          expirationSeconds: {{ .root.Values.vault.kubernetesAuth.tokenExpirationSeconds }}
          path: token
{{- if .database }}
- name: credentials
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end }}
{{- end -}}

{{/*
The init container that logs in to Vault as the pod's role and writes the database URL to the
in-memory volume, where the process reads it (ORCH_DATABASE__URL_FILE). Called with
(dict "root" $ "role" <Vault role>).
*/}}
{{- define "orchestrator.databaseUrlInit" -}}
- name: database-url
  image: {{ include "orchestrator.image" .root | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - python
    - -m
    - infra.vault_file
    - platform/database
    - url
    - {{ include "orchestrator.credentialsDir" . }}/database-url
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  env:
    {{- include "orchestrator.vaultEnv" . | nindent 4 }}
  volumeMounts:
    - {name: vault-token, mountPath: /var/run/secrets/vault, readOnly: true}
    - {name: credentials, mountPath: {{ include "orchestrator.credentialsDir" . }}}
  resources:
    requests: {cpu: 10m, memory: 64Mi}
    limits: {memory: 128Mi}
{{- end -}}

{{/* How a container logs in to Vault: its pod's token, as the role. (dict "root" $ "role" r) */}}
{{- define "orchestrator.vaultEnv" -}}
- name: ORCH_VAULT__ADDR
  value: {{ .root.Values.config.vaultAddr | quote }}
- name: ORCH_VAULT__AUTH
  value: kubernetes
- name: ORCH_VAULT__KUBERNETES_MOUNT
  value: {{ .root.Values.vault.kubernetesAuth.mount | quote }}
- name: ORCH_VAULT__KUBERNETES_ROLE
  value: {{ .role | quote }}
{{- end -}}
