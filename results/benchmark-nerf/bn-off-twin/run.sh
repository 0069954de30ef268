cd /work/main
arm=$1
if [ $arm = off ]; then extra="--pipeline.model.normalization none --optimizers.fields.optimizer.lr 3e-3 --optimizers.fields.scheduler.lr-final 3e-5"; else extra=""; fi
start=$(date +%s)
/usr/bin/time -v .venv/bin/ns-train bn-nerf-cpu --threads 1 --max-num-iterations 500 --vis tensorboard --output-dir /tmp/item2/runs --experiment-name $arm --data /tmp/item2/scene $extra > /tmp/item2/$arm.log 2> /tmp/item2/$arm.err
echo "$arm wall $(( $(date +%s) - start )) s $(grep 'Maximum resident' /tmp/item2/$arm.err)" >> /tmp/item2/summary.txt
