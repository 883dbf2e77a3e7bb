{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "agent-mesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agent-mesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agent-mesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* An agent name as a Kubernetes name part: agent names may contain . and _ (packages/config). */}}
{{- define "agent-mesh.agentSlug" -}}
{{- regexReplaceAll "[^a-z0-9-]" . "-" | trunc 20 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------------------- */}}

{{- define "agent-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-mesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent-mesh.labels" -}}
helm.sh/chart: {{ include "agent-mesh.chart" . }}
{{ include "agent-mesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agent-mesh
{{- end -}}

{{/* Image, service account ----------------------------------------------------------------------- */}}

{{- define "agent-mesh.image" -}}
{{- include "agent-mesh.imageOf" (dict "image" .Values.image "default" .Values.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/*
The image of an agent's own Deployment (worker.agents.<name>.image): its repository, tag or digest,
each defaulting to the chart's image. Argument: dict "image" "default" "appVersion".
*/}}
{{- define "agent-mesh.imageOf" -}}
{{- $repository := default .default.repository .image.repository -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default (default .appVersion .default.tag) .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "agent-mesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agent-mesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Configuration -------------------------------------------------------------------------------- */}}

{{/* Every worker agent, sorted, comma-separated (the init Job creates all their work topics). */}}
{{- define "agent-mesh.allAgents" -}}
{{- keys .Values.worker.agents | sortAlpha | join "," -}}
{{- end -}}

{{- define "agent-mesh.createTopics" -}}
{{- if kindIs "bool" .Values.config.createTopics -}}
{{- .Values.config.createTopics -}}
{{- else -}}
{{- not .Values.initJob.enabled -}}
{{- end -}}
{{- end -}}

{{- define "agent-mesh.kafkaCaFile" -}}
/etc/mesh/kafka-ca/{{ .Values.kafka.tls.caSecret.key }}
{{- end -}}

{{- define "agent-mesh.registryCaFile" -}}
/etc/mesh/registry-ca/{{ .Values.schemaRegistry.tls.caSecret.key }}
{{- end -}}

{{- define "agent-mesh.redisCaFile" -}}
/etc/mesh/redis-ca/{{ .Values.redis.tls.caSecret.key }}
{{- end -}}

{{/*
The shared, non-secret MESH_* environment as a YAML map: the data of the ConfigMap, and the env of
the init Job (a pre-install hook runs before the ConfigMap exists).
*/}}
{{- define "agent-mesh.sharedEnv" -}}
{{- $v := .Values -}}
MESH_KAFKA_BROKERS: {{ join "," $v.kafka.brokers | quote }}
{{- if $v.kafka.tls.enabled }}
MESH_KAFKA_SSL: "true"
MESH_KAFKA_SSL_REJECT_UNAUTHORIZED: {{ $v.kafka.tls.rejectUnauthorized | toString | quote }}
{{- if $v.kafka.tls.caSecret.name }}
MESH_KAFKA_SSL_CA_FILE: {{ include "agent-mesh.kafkaCaFile" . | quote }}
{{- end }}
{{- end }}
{{- if $v.kafka.sasl.mechanism }}
MESH_KAFKA_SASL_MECHANISM: {{ $v.kafka.sasl.mechanism | quote }}
MESH_KAFKA_SASL_USERNAME: {{ $v.kafka.sasl.username | quote }}
{{- end }}
MESH_SCHEMA_REGISTRY_URL: {{ $v.schemaRegistry.url | quote }}
{{- if $v.schemaRegistry.tls.caSecret.name }}
MESH_SCHEMA_REGISTRY_CA_FILE: {{ include "agent-mesh.registryCaFile" . | quote }}
{{- end }}
{{- if $v.schemaRegistry.username }}
MESH_SCHEMA_REGISTRY_USERNAME: {{ $v.schemaRegistry.username | quote }}
{{- end }}
{{- if not $v.secrets.keys.redisUrl }}
MESH_REDIS_URL: {{ $v.redis.url | quote }}
{{- end }}
{{- if $v.redis.tls.caSecret.name }}
MESH_REDIS_TLS_CA_FILE: {{ include "agent-mesh.redisCaFile" . | quote }}
{{- end }}
MESH_TOPIC_PREFIX: {{ $v.config.topicPrefix | quote }}
MESH_PARTITIONS: {{ $v.config.partitions | toString | quote }}
MESH_REPLICATION_FACTOR: {{ $v.config.replicationFactor | toString | quote }}
MESH_CREATE_TOPICS: {{ include "agent-mesh.createTopics" . | quote }}
MESH_MAX_HOPS: {{ $v.config.maxHops | toString | quote }}
MESH_MAX_REVISITS: {{ $v.config.maxRevisits | toString | quote }}
MESH_MAX_ATTEMPTS: {{ $v.config.maxAttempts | toString | quote }}
MESH_RETRY_TIERS: {{ $v.config.retryTiers | quote }}
MESH_LOG_LEVEL: {{ $v.config.logLevel | quote }}
MESH_WORKER_AGENTS: {{ include "agent-mesh.allAgents" . | quote }}
{{- range $name, $value := $v.config.env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Environment entries read from the existing Secret. Argument: dict "root" $ "worker" bool. */}}
{{- define "agent-mesh.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $secret := $v.secrets.existingSecret -}}
{{- $vars := dict "MESH_KAFKA_SASL_PASSWORD" $v.secrets.keys.kafkaSaslPassword "MESH_SCHEMA_REGISTRY_PASSWORD" $v.secrets.keys.schemaRegistryPassword "MESH_REDIS_PASSWORD" $v.secrets.keys.redisPassword "MESH_REDIS_URL" $v.secrets.keys.redisUrl "MESH_API_TOKEN" $v.secrets.keys.apiToken -}}
{{- if .worker -}}
{{- $_ := set $vars "MESH_LLM_API_KEY" $v.secrets.keys.llmApiKey -}}
{{- end -}}
{{- range $name := keys $vars | sortAlpha }}
{{- $key := get $vars $name }}
{{- if $key }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Checks the chart cannot express in values.schema.json; each failure names the values. */}}
{{- define "agent-mesh.validate" -}}
{{- $v := .Values -}}
{{- $keys := $v.secrets.keys -}}
{{- range $name, $key := $keys }}
{{- if and $key (not $v.secrets.existingSecret) }}
{{- fail (printf "secrets.keys.%s is set but secrets.existingSecret is empty: name the Secret that holds the key %q" $name $key) }}
{{- end }}
{{- end }}
{{- if $v.kafka.sasl.mechanism }}
{{- if not $v.kafka.sasl.username }}
{{- fail "kafka.sasl.mechanism is set: kafka.sasl.username is required" }}
{{- end }}
{{- if not $keys.kafkaSaslPassword }}
{{- fail "kafka.sasl.mechanism is set: secrets.keys.kafkaSaslPassword (and secrets.existingSecret) is required" }}
{{- end }}
{{- end }}
{{- if and $v.schemaRegistry.username (not $keys.schemaRegistryPassword) }}
{{- fail "schemaRegistry.username is set: secrets.keys.schemaRegistryPassword (and secrets.existingSecret) is required" }}
{{- end }}
{{- if and $v.worker.enabled (not $v.worker.agents) }}
{{- fail "worker.enabled is true but worker.agents is empty" }}
{{- end }}
{{- range $agent, $over := $v.worker.agents }}
{{- $keda := mergeOverwrite (deepCopy $v.worker.keda) (default dict (default dict $over).keda) }}
{{- if and $keda.enabled $keda.allowIdleConsumers $keda.limitToPartitionsWithLag }}
{{- fail (printf "worker keda of agent %s: allowIdleConsumers and limitToPartitionsWithLag cannot both be true (KEDA refuses it)" $agent) }}
{{- end }}
{{- end }}
{{- $slugs := dict }}
{{- range $agent, $_ := $v.worker.agents }}
{{- $slug := include "agent-mesh.agentSlug" $agent }}
{{- if hasKey $slugs $slug }}
{{- fail (printf "worker agents %s and %s have the same Kubernetes name %s" (get $slugs $slug) $agent $slug) }}
{{- end }}
{{- $_ := set $slugs $slug $agent }}
{{- end }}
{{- end -}}

{{/*
The Deployments: one per service, one per worker agent. A YAML list of
{name, component, service, port, args, values, agent, keda} for the templates that iterate on it.
*/}}
{{- define "agent-mesh.workloads" -}}
{{- $v := .Values -}}
{{- $full := include "agent-mesh.fullname" . -}}
items:
{{- if $v.orchestrator.enabled }}
  - name: {{ printf "%s-orchestrator" $full }}
    component: orchestrator
    main: services/orchestrator/src/main.ts
    values: {{ toJson $v.orchestrator }}
{{- end }}
{{- if $v.aggregator.enabled }}
  - name: {{ printf "%s-aggregator" $full }}
    component: aggregator
    main: services/aggregator/src/main.ts
    values: {{ toJson $v.aggregator }}
{{- end }}
{{- if $v.dlqTriage.enabled }}
  - name: {{ printf "%s-dlq-triage" $full }}
    component: dlq-triage
    main: services/dlq-triage/src/main.ts
    values: {{ toJson $v.dlqTriage }}
{{- end }}
{{- if $v.worker.enabled }}
{{- range $agent := keys $v.worker.agents | sortAlpha }}
{{- $over := default dict (get $v.worker.agents $agent) }}
{{- $base := omit $v.worker "agents" "keda" "llm" }}
{{- $merged := mergeOverwrite (deepCopy $base) (omit $over "keda") }}
{{- $keda := mergeOverwrite (deepCopy $v.worker.keda) (default dict $over.keda) }}
  - name: {{ printf "%s-worker-%s" $full (include "agent-mesh.agentSlug" $agent) }}
    component: worker
    agent: {{ $agent | quote }}
    agentSlug: {{ include "agent-mesh.agentSlug" $agent | quote }}
    main: {{ default "services/worker/src/main.ts" $over.main | quote }}
    {{- with $over.image }}
    image: {{ include "agent-mesh.imageOf" (dict "image" . "default" $v.image "appVersion" $.Chart.AppVersion) | quote }}
    {{- end }}
    values: {{ toJson (omit $merged "image" "main") }}
    keda: {{ toJson $keda }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A container of the init Job. Argument: dict "root" $ "args" (list …). */}}
{{- define "agent-mesh.initContainer" -}}
{{- $v := .root.Values -}}
image: {{ include "agent-mesh.image" .root | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args:
  {{- toYaml .args | nindent 2 }}
env:
  {{- range $name, $value := (include "agent-mesh.sharedEnv" .root | fromYaml) }}
  - name: {{ $name }}
    value: {{ $value | toString | quote }}
  {{- end }}
  {{- include "agent-mesh.secretEnv" (dict "root" .root "worker" false) | nindent 2 }}
resources:
  {{- toYaml $v.initJob.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- include "agent-mesh.caVolumeMounts" .root | nindent 2 }}
{{- end -}}

{{/*
The CA certificates a container trusts, from existing Secrets: Kafka's (kafka.tls.caSecret), Redis's
(redis.tls.caSecret) and the registry's (schemaRegistry.tls.caSecret). Every container that reads the shared environment mounts them, since
the variables naming them must point at readable files.
*/}}
{{- define "agent-mesh.caVolumeMounts" -}}
{{- $v := .Values -}}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/mesh/kafka-ca
  readOnly: true
{{- end }}
{{- if $v.redis.tls.caSecret.name }}
- name: redis-ca
  mountPath: /etc/mesh/redis-ca
  readOnly: true
{{- end }}
{{- if $v.schemaRegistry.tls.caSecret.name }}
- name: registry-ca
  mountPath: /etc/mesh/registry-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "agent-mesh.caVolumes" -}}
{{- $v := .Values -}}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.tls.caSecret.name }}
    items:
      - key: {{ $v.kafka.tls.caSecret.key }}
        path: {{ $v.kafka.tls.caSecret.key }}
{{- end }}
{{- if $v.redis.tls.caSecret.name }}
- name: redis-ca
  secret:
    secretName: {{ $v.redis.tls.caSecret.name }}
    items:
      - key: {{ $v.redis.tls.caSecret.key }}
        path: {{ $v.redis.tls.caSecret.key }}
{{- end }}
{{- if $v.schemaRegistry.tls.caSecret.name }}
- name: registry-ca
  secret:
    secretName: {{ $v.schemaRegistry.tls.caSecret.name }}
    items:
      - key: {{ $v.schemaRegistry.tls.caSecret.key }}
        path: {{ $v.schemaRegistry.tls.caSecret.key }}
{{- end }}
{{- end -}}
