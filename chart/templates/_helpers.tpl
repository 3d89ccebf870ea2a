{{/*
Shared facts and names. Everything another template needs to agree on is defined here once:
the instance-type table, the derived replica/worker arithmetic, names and labels.
*/}}

{{/*
Instance facts (EC2 documentation): NeuronCores, Neuron devices, vCPUs and memory (GiB).
The only place these numbers exist; the worker's resources, rayStartParams.resources and the
replicas-per-node arithmetic are derived from the row of workers.instanceType.
*/}}
{{- define "sdxl.instanceTable" -}}
inf2.xlarge:    {neuronCores: 2,  neuronDevices: 1,  vcpu: 4,   memoryGiB: 16}
inf2.8xlarge:   {neuronCores: 2,  neuronDevices: 1,  vcpu: 32,  memoryGiB: 128}
inf2.24xlarge:  {neuronCores: 12, neuronDevices: 6,  vcpu: 96,  memoryGiB: 384}
inf2.48xlarge:  {neuronCores: 24, neuronDevices: 12, vcpu: 192, memoryGiB: 768}
trn1.2xlarge:   {neuronCores: 2,  neuronDevices: 1,  vcpu: 8,   memoryGiB: 32}
trn1.32xlarge:  {neuronCores: 32, neuronDevices: 16, vcpu: 128, memoryGiB: 512}
trn1n.32xlarge: {neuronCores: 32, neuronDevices: 16, vcpu: 128, memoryGiB: 512}
{{- end -}}

{{/* Names of the known instance types, comma-separated (for messages). */}}
{{- define "sdxl.knownInstanceTypes" -}}
{{- keys (include "sdxl.instanceTable" . | fromYaml) | sortAlpha | join ", " -}}
{{- end -}}

{{/*
The worker node's facts as a YAML map (empty when the type is unknown; validate.yaml reports that).
*/}}
{{- define "sdxl.node" -}}
{{- $table := include "sdxl.instanceTable" . | fromYaml -}}
{{- $row := get $table .Values.workers.instanceType | default dict -}}
{{- toYaml $row -}}
{{- end -}}

{{/*
Derived numbers, as a YAML map of integers:
  nodeCores        NeuronCores of one worker node
  replicasPerNode  node cores / cores per replica
  minReplicas      the fewest Serve replicas (replicas, or autoscaling.minReplicas)
  maxReplicas      the most Serve replicas (replicas, or autoscaling.maxReplicas)
  workerCpu        vCPUs the worker container requests (node minus headroom)
  workerMemoryMiB  memory the worker container requests, MiB (node minus headroom)
  neuronRequest    count of workers.neuronResource (cores or devices of the whole node)
  initialNodes     worker pods to start with: enough for minReplicas, within min/max nodes
*/}}
{{- define "sdxl.derived" -}}
{{- $node := include "sdxl.node" . | fromYaml -}}
{{- $cores := int ($node.neuronCores | default 0) -}}
{{- $per := int .Values.neuronCoresPerReplica -}}
{{- $perNode := 0 -}}
{{- if and (gt $cores 0) (gt $per 0) -}}{{- $perNode = div $cores $per -}}{{- end -}}
{{- $minR := int .Values.replicas -}}
{{- $maxR := int .Values.replicas -}}
{{- if .Values.autoscaling.enabled -}}
{{- $minR = int .Values.autoscaling.minReplicas -}}
{{- $maxR = int .Values.autoscaling.maxReplicas -}}
{{- end -}}
{{- $memMiB := mul (int ($node.memoryGiB | default 0)) 1024 -}}
{{- $workerMem := sub (div (mul $memMiB (sub 100 (int .Values.workers.headroom.memoryPercent))) 100) (mul (int .Values.workers.headroom.memoryGiB) 1024) -}}
{{- $workerCpu := sub (int ($node.vcpu | default 0)) (int .Values.workers.headroom.cpu) -}}
{{- $neuronRequest := $cores -}}
{{- if eq .Values.workers.neuronResource "aws.amazon.com/neuron" -}}{{- $neuronRequest = int ($node.neuronDevices | default 0) -}}{{- end -}}
{{- $minNodes := int .Values.workers.minNodes -}}
{{- $maxNodes := int .Values.workers.maxNodes -}}
{{- $needed := 0 -}}
{{- if gt $perNode 0 -}}{{- $needed = div (add $minR (sub $perNode 1)) $perNode -}}{{- end -}}
{{- $initial := max $minNodes (min $needed $maxNodes) -}}
nodeCores: {{ $cores }}
replicasPerNode: {{ $perNode }}
minReplicas: {{ $minR }}
maxReplicas: {{ $maxR }}
workerCpu: {{ $workerCpu }}
workerMemoryMiB: {{ $workerMem }}
neuronRequest: {{ $neuronRequest }}
initialNodes: {{ $initial }}
{{- end -}}

{{- define "sdxl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of the RayService and prefix of every object. KubeRay appends "-serve-svc", "-head-svc" and
a random cluster suffix, so it is kept to 40 characters.
*/}}
{{- define "sdxl.fullname" -}}
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

{{- define "sdxl.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name -}}
{{- end -}}

{{/*
The karpenter.sh/nodepool the workers select. With karpenter.create the chart renders that NodePool and
scopes its name to the release (two releases never fight over one NodePool); else it is the user's.
*/}}
{{- define "sdxl.workerNodePool" -}}
{{- if and .Values.karpenter.create .Values.workers.nodePool -}}
{{- printf "%s-%s" (include "sdxl.fullname" .) .Values.workers.nodePool | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Values.workers.nodePool -}}
{{- end -}}
{{- end -}}

{{/* KubeRay's stable Serve Service of a RayService: survives cluster switches on upgrade. */}}
{{- define "sdxl.serveService" -}}
{{- printf "%s-serve-svc" (include "sdxl.fullname" .) -}}
{{- end -}}

{{/* KubeRay's stable head Service of a RayService (dashboard 8265, GCS 6379, client 10001). */}}
{{- define "sdxl.headService" -}}
{{- printf "%s-head-svc" (include "sdxl.fullname" .) -}}
{{- end -}}

{{/* Labels that never change across chart versions (safe inside the RayService pod templates). */}}
{{- define "sdxl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sdxl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of top-level objects. Never used in the RayService pod templates: a label that changes
with the chart version would change rayClusterConfig and make KubeRay build a new cluster.
*/}}
{{- define "sdxl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sdxl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Image of the Ray containers: repository@digest when image.digest is set, else repository:tag. */}}
{{- define "sdxl.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The app's AppArgs (app/config.py), built from values. */}}
{{- define "sdxl.appArgs" -}}
{{- $args := dict
  "model_id" .Values.model.id
  "backend" .Values.model.backend
  "image_sizes" .Values.model.imageSizes
  "batch_size" (int .Values.model.batchSize)
  "batch_wait_timeout_s" .Values.model.batchWaitTimeoutS
  "neuron_cores_per_replica" (int .Values.neuronCoresPerReplica)
  "default_steps" (int .Values.generation.defaultSteps)
  "max_steps" (int .Values.generation.maxSteps)
  "default_guidance_scale" (float64 .Values.generation.defaultGuidanceScale)
  "max_guidance_scale" (float64 .Values.generation.maxGuidanceScale)
  "max_prompt_chars" (int .Values.generation.maxPromptChars)
  "max_images_per_request" (int .Values.generation.maxImagesPerRequest)
  "max_body_bytes" (int .Values.generation.maxBodyBytes)
  "default_output_format" .Values.generation.defaultOutputFormat
  "default_strength" (float64 .Values.generation.defaultStrength)
  "max_upload_bytes" (int .Values.generation.maxUploadBytes)
  "max_upload_pixels" (int .Values.generation.maxUploadPixels)
  "png_compress_level" (int .Values.generation.pngCompressLevel)
  "jpeg_quality" (int .Values.generation.jpegQuality)
  "webp_quality" (int .Values.generation.webpQuality)
  "warmup" .Values.model.warmup
  "log_prompts" .Values.monitoring.logPrompts
-}}
{{- if .Values.model.revision -}}{{- $_ := set $args "model_revision" .Values.model.revision -}}{{- end -}}
{{- if .Values.apiKey.existingSecret -}}{{- $_ := set $args "api_key_env" .Values.apiKey.envName -}}{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/*
serveConfigV2: the applications Serve runs. Everything here is applied in place on upgrade.
*/}}
{{- define "sdxl.serveConfig" -}}
{{- $d := include "sdxl.derived" . | fromYaml -}}
{{- $actor := dict
  "num_cpus" .Values.serve.replicaCpus
  "memory" (mul (int .Values.serve.replicaMemoryMiB) 1048576)
  "resources" (dict "neuron_cores" (int .Values.neuronCoresPerReplica))
-}}
{{- $deployment := dict
  "name" "SDXLService"
  "max_ongoing_requests" (int .Values.serve.maxOngoingRequests)
  "max_queued_requests" (int .Values.serve.maxQueuedRequests)
  "graceful_shutdown_timeout_s" .Values.serve.gracefulShutdownTimeoutS
  "graceful_shutdown_wait_loop_s" .Values.serve.gracefulShutdownWaitLoopS
  "health_check_period_s" .Values.serve.healthCheckPeriodS
  "health_check_timeout_s" .Values.serve.healthCheckTimeoutS
  "ray_actor_options" $actor
-}}
{{- if .Values.autoscaling.enabled -}}
{{- $_ := set $deployment "autoscaling_config" (dict
  "min_replicas" (int .Values.autoscaling.minReplicas)
  "max_replicas" (int .Values.autoscaling.maxReplicas)
  "target_ongoing_requests" .Values.autoscaling.targetOngoingRequests
  "upscale_delay_s" .Values.autoscaling.upscaleDelayS
  "downscale_delay_s" .Values.autoscaling.downscaleDelayS) -}}
{{- if hasKey .Values.autoscaling "initialReplicas" -}}{{- if not (kindIs "invalid" .Values.autoscaling.initialReplicas) -}}
{{- $_ := set $deployment.autoscaling_config "initial_replicas" (int .Values.autoscaling.initialReplicas) -}}{{- end -}}
{{- end -}}
{{- else -}}
{{- $_ := set $deployment "num_replicas" (int .Values.replicas) -}}
{{- end -}}
{{- $apps := list (dict
  "name" "sdxl"
  "route_prefix" "/serve"
  "import_path" "app.main:build_app"
  "args" (include "sdxl.appArgs" . | fromYaml)
  "deployments" (list $deployment)) -}}
{{- if .Values.ui.enabled -}}
{{- $uiArgs := dict "api_url" .Values.ui.apiUrl -}}
{{- /* Without shareApiKey the UI holds no key: it asks each visitor for theirs. */ -}}
{{- if and .Values.apiKey.existingSecret .Values.ui.shareApiKey -}}{{- $_ := set $uiArgs "api_key_env" .Values.apiKey.envName -}}{{- end -}}
{{- $apps = append $apps (dict
  "name" "ui"
  "route_prefix" "/ui"
  "import_path" "app.ui:build_ui_app"
  "args" $uiArgs
  "deployments" (list (dict "name" "SDXLWebUI" "ray_actor_options" (dict "num_cpus" .Values.ui.numCpus)))) -}}
{{- end -}}
{{- $cfg := dict
  "proxy_location" "EveryNode"
  "http_options" (dict "host" "0.0.0.0" "port" 8000 "request_timeout_s" .Values.serve.requestTimeoutS)
  "applications" $apps -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Container securityContext of every Ray container (restricted Pod Security Standard). */}}
{{- define "sdxl.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sdxl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sdxl.requestLatencyBucketsMs" -}}
5,25,100,250,500,1000,2000,3000,4000,5000,7500,10000,15000,20000,30000,45000,60000,120000,300000
{{- end -}}

{{/* Environment of every Ray container. */}}
{{- define "sdxl.env" -}}
{{- /* Writable places under the read-only root: /cache (emptyDir) for caches and generated models. */ -}}
- name: XDG_CACHE_HOME
  value: /cache
{{- /*
Buckets (ms) of Serve's own request-latency histogram (ray_serve_http_request_latency_ms, which the
latency panel and SDXLLatencyAboveSLO read): Serve 2.60's default jumps from 10 s to 60 s, where an SDXL
request's p95 lands, so a p95 of 12 s would read as up to 60 s. These are the bounds of the app's
ray_sdxl_request_seconds (app/metrics.py REQUEST_SECONDS; a test keeps them equal).
*/}}
- name: RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS
  value: {{ include "sdxl.requestLatencyBucketsMs" . | quote }}
- name: SDXL_EMBEDDED_MODEL_DIR
  value: /cache/embedded-model
{{- if .Values.model.download }}
- name: HF_HUB_OFFLINE
  value: "0"
- name: HF_HOME
  value: /cache/huggingface
{{- end }}
{{- if .Values.model.huggingFaceToken.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.model.huggingFaceToken.existingSecret }}
      key: {{ .Values.model.huggingFaceToken.secretKey }}
{{- end }}
{{- if .Values.apiKey.existingSecret }}
- name: {{ .Values.apiKey.envName }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.apiKey.existingSecret }}
      key: {{ .Values.apiKey.secretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Mounts of a Ray container: dict "root" $ "rayLogs" bool "cache" bool. rayLogs mounts the bounded tmp
volume at /tmp/ray as well, so KubeRay does not add its own unbounded "ray-logs" emptyDir there (it does
on the head and the autoscaler sidecar, unless the path is already mounted).
*/}}
{{- define "sdxl.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .rayLogs }}
- name: tmp
  mountPath: /tmp/ray
  subPath: ray
{{- end }}
{{- if .cache }}
- name: cache
  mountPath: /cache
{{- end }}
{{- end -}}

{{- define "sdxl.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.volumes.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.volumes.modelCacheSizeLimit }}
{{- end -}}

{{/* Pod template metadata of the Ray pods: stable labels only (see sdxl.labels). */}}
{{- define "sdxl.podMetadata" -}}
labels:
  {{- include "sdxl.selectorLabels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
