# Sourced by the device sweeps (health_sweep_gpu.sh, centre_sweep_gpu.sh): the environment they
# share. Expects the repository root as the working directory, with .gpu/ prepared (packed
# Imagenette in .gpu/imagenette, a snapshot of src in .gpu/src, health_sweep.py in .gpu/).
# Sets ROOT, D (the data spec) and R (the run directory); exits if the Python stack is broken.
ROOT=$PWD
export PYTHONPATH=$ROOT/.gpu/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch,timm,safetensors,yaml,tqdm,skimage,scipy,tensorboard,sys; print(sys.version.split()[0], torch.__version__, timm.__version__, torch.cuda.is_available())" || exit 1
D=imagefolder:$ROOT/.gpu/imagenette
R=/tmp/runs
mkdir -p "$R"
