# The ELSA paper's dynamic filter baseline: ELSA-Swin-T's recipe with a 7x7 DDF mixer in stages
# 0-2 (our block form: docs/elsa_facts.md, "Baselines of the paper's comparison").
_base_ = './elsa-swin-tiny_8xb128_in1k.py'

model = dict(backbone=dict(local_mixer='ddf'))

# No weight decay on stage 3's relative position table (attn.rb); norms (the mixers'
# BatchNorms and DDF's channel filter scale channel_branch.4.std, both one-dimensional) and
# biases by the base. There is no ghost head to exempt.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '_delete_': True,
        'attn.rb': dict(decay_mult=0.)
    }))
